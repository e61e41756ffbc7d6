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
    "descriptors",
    "exe",
    "fd_target",
    "fd_targets",
    "is_ours",
    "pids",
    "same_process",
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


def same_process(root: str, pid: int) -> bool:
    """Whether ``root``'s entry for ``pid`` is the process this process calls pid.

    True only where /proc is this pid namespace's and ``root/PID`` is the very
    directory /proc/PID is: a proc tree of another pid namespace (a host's
    /proc mounted in a container) or a copy numbers other processes.
    """
    if not is_ours():
        return False
    try:
        theirs = os.stat(_path(root, pid))
        ours = os.stat(_path(PROC, pid))
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


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
    raw = raw.rstrip(b"\0")  # what is left of a shortened title
    return [a.decode(errors="replace") for a in raw.split(b"\0")] if raw else []


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


def _fd_table(path: str) -> dict[int, str] | None:
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return {}  # the process is gone
    except OSError:
        return None
    table: dict[int, str] = {}
    for name in names:
        if name.isdigit():
            try:
                table[int(name)] = os.readlink(os.path.join(path, name))
            except FileNotFoundError:
                continue  # closed since the listing
            except OSError:
                return None
    return table


def descriptors(pid: int, root: str = PROC) -> dict[int, str] | None:
    """Each open descriptor of the process -> what it is (``pipe:[INODE]``...).

    ``{}`` for a process that holds none: gone, or a zombie. None where they
    cannot be read: another user's process, unless we are root. A process
    whose main thread exited while other threads run shows no descriptors
    under its pid; they are read through one of those threads.
    """
    table = _fd_table(_path(root, pid, "fd"))
    if table != {}:
        return table
    try:
        tids = [t for t in os.listdir(_path(root, pid, "task")) if t.isdigit()]
    except OSError:
        return table
    for tid in tids:
        if tid != str(pid):
            table = _fd_table(_path(root, pid, "task", tid, "fd"))
            if table != {}:
                return table
    return {}


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
