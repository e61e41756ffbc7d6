"""The proxy's process as its ProxyCommand owns it: one state, waiting, reaping.

CPython's ``Popen`` is the model (one status, one thread reaps, a child that
someone else reaped is left alone), with two differences: finding the proxy
ended does not reap it (``waitid(WNOWAIT)``), so its pid and the number of its
process group stay its own until close() collects it; and every signal goes
through :mod:`.gate`, which proves ownership when the signal is sent.

The states, and what moves between them (all here, in :meth:`_look`,
:meth:`reap` and :meth:`release_inherited`)::

    running --(exit seen, not reaped)---------------------> ended
    running, ended --(someone else reaped it)-------------> lost
    ended --(close() collected it)------------------------> reaped
    any --(this copy was inherited by fork)---------------> foreign

"Someone else" is a SIGCHLD handler, ``SIGCHLD=SIG_IGN``, ``os.wait()``, an
event loop's child watcher or a caller's ``process.poll()``: the status is
then the one ``Popen`` recorded, else 0, as CPython reports it. A lost,
reaped or foreign proxy is never signalled again.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from typing import Any

from . import gate, procfs

__all__ = ["ENDED", "FOREIGN", "LOST", "REAPED", "RUNNING", "ProxyChild"]

RUNNING, ENDED, REAPED, LOST, FOREIGN = "running", "ended", "reaped", "lost", "foreign"
_HAVE_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")


def _code(info: Any) -> int:
    signalled = info.si_code != os.CLD_EXITED
    return -int(info.si_status) if signalled else int(info.si_status)


class ProxyChild:
    """One proxy process: its state, its status, and what may signal it."""

    def __init__(self, process: Any, own_group: bool) -> None:
        self.process = process
        self.pid: int = process.pid
        #: It leads a session of its own: its process group is all it started.
        self.own_group = own_group
        self.owner_pid = os.getpid()
        self.state = RUNNING
        #: The exit status once ended (negative: a signal); None while running.
        self.returncode: int | None = None
        #: False when someone else reaped it and the status was not recorded.
        self.status_known = True
        #: Whether close() had to send SIGKILL to it.
        self.killed = False
        self.pidfd = gate.open_pidfd(self.pid)
        self.start_ticks = procfs.start_ticks(self.pid)
        # Re-entrant: close() may run in a signal handler inside our own _look.
        self._lock = threading.RLock()

    def _path(self) -> tuple[int, int]:
        if self.pidfd is not None and getattr(os, "P_PIDFD", None) is not None:
            return os.P_PIDFD, self.pidfd
        return os.P_PID, self.pid

    def _look(self) -> None:
        """running -> ended or lost, if that is what happened."""
        with self._lock:
            if self.state != RUNNING:
                return
            if self.process.returncode is not None:  # a Popen call reaped it
                self._to(LOST, self.process.returncode)
                return
            if not _HAVE_WAITID:  # no way to look without reaping (macOS)
                if self.process.poll() is not None:
                    self._to(REAPED, self.process.returncode)
                return
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            try:
                info = os.waitid(*self._path(), flags)
            except ChildProcessError:
                self.status_known = False
                self._to(LOST, 0)
                return
            if info is not None and info.si_pid:
                self._to(ENDED, _code(info))

    def _to(self, state: str, code: int | None) -> None:
        self.state = state
        self.returncode = code
        if state in (REAPED, LOST) and self.process.returncode is None:
            # Keep Popen off this pid for good, as CPython does.
            self.process.returncode = code

    def poll(self) -> int | None:
        """The exit status once the proxy ended, else None; never reaps."""
        if self.state == RUNNING:
            self._look()
        if self.state == FOREIGN:
            return 0 if self.returncode is None else self.returncode
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        """``poll()``, waiting up to ``timeout`` seconds for the proxy to end."""
        if self.poll() is not None or timeout <= 0:
            return self.poll()
        deadline = time.monotonic() + timeout
        poller = getattr(select, "poll", None)  # looked up now: monkey-patching
        watch = None
        if self.pidfd is not None and poller is not None:
            try:
                watch = poller()  # a pidfd turns readable when its process exits
                watch.register(self.pidfd, select.POLLIN)
            except OSError:  # out of descriptors, say: sleep between looks
                watch = None
        delay = 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if watch is not None:
                watch.poll(max(1, int(min(left, 0.25) * 1000)))
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.01)
        return self.poll()

    def signal(self, sig: int) -> None:
        """``sig`` to the proxy and what it started, as far as each is provably
        still its own: its group, or else its descendants found in /proc."""
        if sig == signal.SIGKILL and self.poll() is None:
            self.killed = True
        # Held while the pidfd is used: finish() closes it under this lock,
        # and a closed descriptor's number may name another process's pidfd.
        with self._lock:
            if self.state not in (RUNNING, ENDED):
                return
            proof = (self.pid, self.pidfd, sig)
            ended = self.state == ENDED
            if self.own_group:
                gate.signal_child(*proof, True, self.start_ticks, ended)
                return
            # Pinned before the proxy is signalled: once it is gone they are
            # no longer its children, and nothing proves they were.
            pins = self._descendants()
            try:
                gate.signal_child(*proof, False, self.start_ticks, ended)
                for p in pins:
                    p.send(sig)
            finally:
                for p in pins:
                    p.close()

    def _descendants(self) -> list[gate.Pin]:
        family = {self.pid}
        pins = []
        for pid in procfs.descendants(self.pid):  # parents before children
            pinned = gate.pin(pid, None, parents=family)
            if isinstance(pinned, gate.Pin):
                family.add(pid)
                pins.append(pinned)
        return pins

    def finish(self) -> None:
        """After close(): end what the proxy started while its group number is
        still its own, then collect it and let go of the pidfd."""
        if self.state == FOREIGN:
            return
        if self.own_group and self.poll() is not None:
            self.signal(signal.SIGKILL)  # only while it is ended, unreaped
        self.reap()
        with self._lock:
            fd, self.pidfd = self.pidfd, None
        if fd is not None:
            os.close(fd)

    def reap(self) -> None:
        """ended -> reaped: collect our zombie (its pid is free from here on)."""
        # Other holders only look (a waitid() that does not block); this
        # thread may hold it already (a signal handler inside _look).
        if not self._lock.acquire(timeout=1.0):
            return
        try:
            if self.state != ENDED:
                return
            try:
                info = os.waitid(*self._path(), os.WEXITED | os.WNOHANG)
            except ChildProcessError:  # someone else was first: we saw its status
                self._to(LOST, self.returncode)
                return
            if info is not None and info.si_pid:
                self._to(REAPED, _code(info))
        finally:
            self._lock.release()

    def release_inherited(self) -> None:
        """In a forked child: the proxy is the parent's. Never signal, wait for
        or reap it here; drop our copy of the pidfd."""
        self.state = FOREIGN
        self._lock = threading.RLock()
        fd, self.pidfd = self.pidfd, None
        if fd is not None:
            os.close(fd)
