"""The one reader of Linux's /proc: state, parentage, start time, argv, descriptors.

Everything that reads /proc (what a proxy started, the fleet view, ``ps``, the
demo) goes through here, so the parsing of ``/proc/PID/stat`` (whose command
name may hold spaces and parentheses) exists once. A /proc that belongs to
another pid namespace (``unshare --pid`` without ``--mount-proc``, a host's
/proc in a container) numbers other processes than ``os.getpid()`` and
``kill()`` do: :func:`is_ours` says so, and nothing that leads to a signal
reads it then.
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = [
    "ProcStat",
    "argv",
    "children",
    "comm",
    "descendants",
    "exe",
    "fd_target",
    "fd_targets",
    "is_ours",
    "pids",
    "start_ticks",
    "stat",
    "uptime",
]

PROC = "/proc"


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` this package uses."""

    state: str
    ppid: int
    pgid: int
    session: int
    #: Clock ticks after boot: with the pid, it names one process for good.
    start_ticks: int


def _path(root: str, pid: int, *rest: str) -> str:
    return os.path.join(root, str(pid), *rest)


def is_ours(root: str = PROC) -> bool:
    """Whether ``root`` numbers processes as this process's pid namespace does."""
    try:
        return os.readlink(os.path.join(root, "self")) == str(os.getpid())
    except OSError:
        return False


def stat(pid: int, root: str = PROC) -> ProcStat | None:
    """``/proc/PID/stat`` parsed, or None if there is no such process."""
    try:
        with open(_path(root, pid, "stat"), "rb") as f:
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


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks; None where /proc is not ours."""
    info = stat(pid) if is_ours() else None
    return info.start_ticks if info else None


def argv(pid: int, root: str = PROC) -> list[str]:
    """The process's command line, exactly as it set it; [] if unreadable."""
    try:
        with open(_path(root, pid, "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0") if a]


def comm(pid: int, root: str = PROC) -> str:
    try:
        with open(_path(root, pid, "comm"), "rb") as f:
            return f.read().decode(errors="replace").rstrip("\n")
    except OSError:
        return "?"


def exe(pid: int, root: str = PROC) -> str:
    try:
        return os.readlink(_path(root, pid, "exe"))
    except OSError:
        return ""


def fd_target(pid: int, fd: int, root: str = PROC) -> str:
    """What descriptor ``fd`` is (``pipe:[INODE]``...); "" if unreadable."""
    try:
        return os.readlink(_path(root, pid, "fd", str(fd)))
    except OSError:
        return ""


def fd_targets(pid: int, root: str = PROC) -> set[str] | None:
    """What all the process's descriptors are; None if they cannot be read."""
    try:
        names = os.listdir(_path(root, pid, "fd"))
    except OSError:
        return None
    return {fd_target(pid, int(n), root) for n in names if n.isdigit()}


def uptime(root: str = PROC) -> float | None:
    """Seconds since boot, as ``root`` tells; None if it cannot."""
    try:
        with open(os.path.join(root, "uptime")) as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pids(root: str = PROC) -> list[int]:
    """Every process id in ``root`` (empty where there is no /proc)."""
    try:
        return sorted(int(name) for name in os.listdir(root) if name.isdigit())
    except OSError:
        return []


def children(root: str = PROC) -> dict[int, list[int]]:
    """Parent pid -> its children's pids, for every process."""
    found: dict[int, list[int]] = {}
    for pid in pids(root):
        info = stat(pid, root)
        if info is not None:
            found.setdefault(info.ppid, []).append(pid)
    return found


def descendants(pid: int, root: str = PROC) -> list[int]:
    """Children, grandchildren... of ``pid``, parents before their children.

    Empty where there is no /proc, or where ``root`` is /proc of another pid
    namespace (its numbers are not ours to signal).
    """
    if root == PROC and not is_ours():
        return []
    tree = children(root)
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
