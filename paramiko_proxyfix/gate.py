"""Every signal this package sends passes here, proved at the moment it is sent.

Two kinds of target, one rule each:

- **Our own proxy**, a child of this process: through its pidfd, which names
  that process and no other, even once its pid is reused. Its process group
  likewise through the pidfd (``PIDFD_SIGNAL_PROCESS_GROUP``, Linux 6.9+):
  that reaches exactly the group the proxy created, whatever became of the
  number. Where the kernel lacks it, ``killpg()`` only while a fresh
  ``waitid(WNOWAIT)`` shows the leader unreaped, which is when the group's
  number is still its own; once someone else reaped it, nothing is sent.
- **A process that is not our child** (what the proxy started, a pool
  process's proxy, a proxy ``ps`` listed): a pidfd opened first, then the
  process checked against the start time and the parent it was found with.
  Without pidfds, or with a /proc of another pid namespace, nothing is sent.

No answer cached from an earlier look ever authorizes a signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Collection
from typing import Callable

from . import procfs

__all__ = [
    "HAVE_PIDFD",
    "Pin",
    "open_pidfd",
    "pin",
    "signal_child",
    "unreaped",
]

#: pidfd_send_signal() flag: the process group of the pidfd's process.
PIDFD_SIGNAL_PROCESS_GROUP = 4

_pidfd_open: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
_send: Callable[..., None] | None = getattr(signal, "pidfd_send_signal", None)
HAVE_PIDFD = _pidfd_open is not None and _send is not None
_P_PIDFD: int | None = getattr(os, "P_PIDFD", None)
_HAVE_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")

#: Whether this kernel signals a group through a pidfd: None until asked
#: (then found out once; tests set False to force the killpg() path).
group_through_pidfd: bool | None = None


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None (no pidfds here, or it is gone)."""
    if _pidfd_open is None or _send is None:
        return None
    try:
        return _pidfd_open(pid)
    except OSError:
        return None


def unreaped(pid: int, pidfd: int | None, ended: bool = False) -> bool:
    """Whether our child ``pid`` still holds its number: it runs, or it is a
    zombie only we may collect. Asked afresh each time. ``ended``: it was seen
    ended, so without a pidfd only its zombie proves it (a child of ours that
    runs under that number is a later one, whatever its start time)."""
    if not _HAVE_WAITID:
        return False  # cannot tell without reaping: treat "not sure" as no
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    try:
        if pidfd is not None and _P_PIDFD is not None:
            os.waitid(_P_PIDFD, pidfd, flags)
            return True  # the pidfd names this process and no other
        info = os.waitid(os.P_PID, pid, flags)
    except ChildProcessError:
        return False  # reaped, by someone else or by us
    return not ended or (info is not None and info.si_pid == pid)


def _group_through(pidfd: int) -> bool:
    global group_through_pidfd
    if group_through_pidfd is None:
        assert _send is not None
        try:
            _send(pidfd, 0, None, PIDFD_SIGNAL_PROCESS_GROUP)
            group_through_pidfd = True
        except OSError as exc:
            # EINVAL: a kernel before 6.9 knows no such flag.
            group_through_pidfd = exc.errno != 22
    return group_through_pidfd


def signal_child(
    pid: int,
    pidfd: int | None,
    sig: int,
    group: bool,
    start_ticks: int | None,
    ended: bool = False,
) -> None:
    """Send ``sig`` to our child ``pid``; with ``group``, to the process group
    it leads (it was started in a session of its own). Where there is no
    pidfd, ``start_ticks`` (when it started, in 10 ms ticks) and, once it was
    seen ``ended``, its zombie tell it from a later process with its
    number."""
    if pidfd is not None:
        assert _send is not None
        with contextlib.suppress(ProcessLookupError):
            _send(pidfd, sig)
        if group and _group_through(pidfd):
            with contextlib.suppress(ProcessLookupError):
                _send(pidfd, sig, None, PIDFD_SIGNAL_PROCESS_GROUP)
            return
    elif _same_process(pid, start_ticks) and unreaped(pid, None, ended):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if group and _same_process(pid, start_ticks) and unreaped(pid, pidfd, ended):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


def _same_process(pid: int, start_ticks: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``start_ticks``
    (if that was recorded): a later one with its number started later."""
    if start_ticks is None:
        return True
    info = procfs.stat(pid) if procfs.is_ours() else None
    return info is not None and info.start_ticks == start_ticks


class Pin:
    """A process that is not our child, held by a pidfd opened before it was
    checked: signals reach that process or none."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd: int | None = pidfd

    def send(self, sig: int) -> str | None:
        """None once sent, else why not."""
        if self.pidfd is None or _send is None:
            return "already released"
        try:
            _send(self.pidfd, sig)
        except ProcessLookupError:
            return "already gone"
        except PermissionError:
            return "not permitted"
        return None

    def close(self) -> None:
        fd, self.pidfd = self.pidfd, None
        if fd is not None:
            os.close(fd)


def pin(
    pid: int,
    start_ticks: int | None,
    parents: Collection[int] | None = None,
) -> Pin | str:
    """``pid`` pinned if it still is the process found: the same start time
    (unless None) and, given ``parents``, a child of one of them. Else the
    reason why it may not be signalled."""
    if _pidfd_open is None or _send is None:
        return "refused: no pidfd on this system"
    if not procfs.is_ours():
        return "refused: /proc belongs to another pid namespace"
    try:
        fd = _pidfd_open(pid)
    except ProcessLookupError:
        return "already gone"
    except OSError as exc:
        return f"refused: cannot pin it ({exc.strerror})"
    # Opened first, checked second: if it still matches now, the pidfd names
    # the process that was found, not a later one with its number.
    info = procfs.stat(pid)
    why = None
    if info is None or info.state == "Z":
        why = "already gone"
    elif start_ticks is not None and info.start_ticks != start_ticks:
        why = "refused: its start time differs (not the process found)"
    elif parents is not None and info.ppid not in parents:
        why = f"refused: its parent is {info.ppid}, not the one it was found with"
    if why is not None:
        os.close(fd)
        return why
    return Pin(pid, fd)
