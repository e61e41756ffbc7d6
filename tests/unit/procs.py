"""Short-lived real processes for the unit tests, and ways to watch them.

Every process a test starts goes through :class:`Procs` (the ``procs``
fixture), which kills and reaps what is left when the test ends: the
session's leak check fails a test that leaves a process behind. Grandchildren
(orphans once their parent ends) are recorded with their start time and
killed only while that pid is still the same process.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import select
import signal
import subprocess
import time
from typing import Any

from paramiko_proxyfix import gate, procfs

#: A child that starts ``sleep 30`` in the background, prints its pid, then
#: waits for end of file on its stdin and exits with status 3.
WITH_GRANDCHILD = "sleep 30 >/dev/null 2>&1 & echo $!; read x; exit 3"
#: Waits for end of file on stdin, then exits with status 3.
UNTIL_EOF = "read x; exit 3"
#: Longest wait for something that should take milliseconds (a loaded machine).
PATIENCE = 10.0


def ticks(pid: int) -> int:
    info = procfs.stat(pid)
    assert info is not None, f"process {pid} is gone"
    return info.start_ticks


def alive(pid: int, start_ticks: int) -> bool:
    """Whether ``pid`` is still that process and has not exited (no zombie)."""
    info = procfs.stat(pid)
    return info is not None and info.start_ticks == start_ticks and info.state != "Z"


def wait_dead(pid: int, start_ticks: int, timeout: float = PATIENCE) -> bool:
    """Wait until that process has exited (zombie or gone); True if it did."""
    deadline = time.monotonic() + timeout
    while alive(pid, start_ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def pending_signals(pid: int) -> set[int]:
    """Signals sent to ``pid`` and not yet delivered (its own or shared)."""
    found: set[int] = set()
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")):
                    mask = int(line.split()[1], 16)
                    found |= {n for n in range(1, 65) if mask >> (n - 1) & 1}
    except OSError:
        pass
    return found


def stays_alive(pid: int, start_ticks: int, seconds: float = 0.15) -> bool:
    """Whether that process is still running, with no signal pending, for
    ``seconds`` from now.

    A signal sent before this call is pending at once, and a SIGTERM or
    SIGKILL delivered ends the process within that time: a process that was
    sent none stays running with nothing pending.
    """
    deadline = time.monotonic() + seconds
    while True:
        if not alive(pid, start_ticks) or pending_signals(pid):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.01)


def read_line(stream: Any, timeout: float = PATIENCE) -> bytes:
    """One line from a pipe, failing rather than hanging after ``timeout``."""
    fd = stream.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"no line within {timeout} s (got {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


def exited(pid: int, timeout: float = PATIENCE) -> bool:
    """Wait until our child ``pid`` has exited, without reaping it."""
    deadline = time.monotonic() + timeout
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None and info.si_pid:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


@functools.cache
def pidfd_signals_groups() -> bool:
    """Whether this kernel signals a process group through a pidfd (6.9+):
    asked with signal 0 to our own group, which changes nothing (and not
    through the gate, whose calls some tests count)."""
    if not gate.HAVE_PIDFD:
        return False
    fd = os.pidfd_open(os.getpid())
    try:
        signal.pidfd_send_signal(fd, 0, None, gate.PIDFD_SIGNAL_PROCESS_GROUP)
    except OSError as exc:
        return exc.errno != errno.EINVAL
    finally:
        os.close(fd)
    return True


class Procs:
    """The processes one test started; all ended and reaped at its end."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[bytes]] = []
        self.orphans: list[tuple[int, int]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kwargs)
        self.popens.append(p)
        return p

    def sh(self, script: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """``sh -c script``; stdin and stdout are pipes unless given."""
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        return self.start(["/bin/sh", "-c", script], **kwargs)

    def sleeper(self, **kwargs: Any) -> subprocess.Popen[bytes]:
        return self.start(["sleep", "30"], **kwargs)

    def with_grandchild(self, **kwargs: Any) -> tuple[subprocess.Popen[bytes], int]:
        """A WITH_GRANDCHILD child and its grandchild's pid (recorded)."""
        p = self.sh(WITH_GRANDCHILD, **kwargs)
        grandchild = int(read_line(p.stdout))
        self.orphan(grandchild)
        return p, grandchild

    def orphan(self, pid: int) -> None:
        """Kill ``pid`` at the end (if it is still that process)."""
        info = procfs.stat(pid)
        if info is not None:
            self.orphans.append((pid, info.start_ticks))

    def cleanup(self) -> None:
        for pid, start in self.orphans:
            pinned = None
            with contextlib.suppress(OSError):
                pinned = os.pidfd_open(pid)
            try:
                if alive(pid, start):
                    with contextlib.suppress(OSError):
                        if pinned is not None:
                            signal.pidfd_send_signal(pinned, signal.SIGKILL)
                        else:  # no pidfds here: checked just now, by start time
                            os.kill(pid, signal.SIGKILL)
            finally:
                if pinned is not None:
                    os.close(pinned)
        for p in self.popens:
            # Popen.kill() polls first: nothing is sent to a reaped child.
            with contextlib.suppress(OSError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(PATIENCE)
            for pipe in (p.stdin, p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()
        for pid, start in self.orphans:
            wait_dead(pid, start)
