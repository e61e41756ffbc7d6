"""The one reader of Linux's /proc: a process's state, parent, group, start time.

Everything that reads /proc (signalling what a proxy started, the ``ps``
command, the demo) goes through here, so the parsing of ``/proc/PID/stat``
(whose command name may hold spaces and parentheses) exists once.
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["ProcStat", "children", "descendants", "pids", "stat"]


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` this package uses."""

    state: str
    ppid: int
    pgid: int
    session: int
    #: Clock ticks after boot: with the pid, it names one process for good.
    start_ticks: int


def stat(pid: int, root: str = "/proc") -> ProcStat | None:
    """``/proc/PID/stat`` parsed, or None if there is no such process."""
    try:
        with open(os.path.join(root, str(pid), "stat"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # Fields after the command name, which is the text in the last parentheses.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcStat(
            fields[0].decode("ascii", "replace"),
            int(fields[1]),
            int(fields[2]),
            int(fields[3]),
            int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def pids(root: str = "/proc") -> list[int]:
    """Every process id in ``root`` (empty where there is no /proc)."""
    try:
        return [int(name) for name in os.listdir(root) if name.isdigit()]
    except OSError:
        return []


def children(root: str = "/proc") -> dict[int, list[int]]:
    """Parent pid -> its children's pids, for every process."""
    found: dict[int, list[int]] = {}
    for pid in pids(root):
        info = stat(pid, root)
        if info is not None:
            found.setdefault(info.ppid, []).append(pid)
    return found


def descendants(pid: int, root: str = "/proc") -> list[int]:
    """Children, grandchildren... of ``pid`` (empty without /proc)."""
    tree = children(root)
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
