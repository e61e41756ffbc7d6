"""Starting proxy processes, and finding the processes they started."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from .errors import ProxyCommandStartError

__all__ = ["descendants", "has_controlling_tty", "spawn"]


def has_controlling_tty() -> bool:
    """Whether this process has a terminal a proxy could prompt on."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def spawn(argv: list[str]) -> tuple[Any, bool]:
    """Start the proxy with three pipes and no shell, as upstream does.

    Without a terminal (a worker, a service) the proxy gets a session of its
    own, so close() can signal it and everything it started as one group.
    With a terminal it stays in ours, so ``ssh`` can still ask for a
    passphrase there.
    """
    own_group = not has_controlling_tty()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=own_group,
        )
    except OSError as exc:
        reason = f"{exc.strerror or exc}: {argv[0]!r}"
        raise ProxyCommandStartError(" ".join(argv), reason) from exc
    return process, own_group


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of ``pid``, read from /proc (empty without it)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
