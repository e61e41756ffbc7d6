"""The process behind one ProxyCommand: start, status, signalling and reaping, close.

The rule: signal only a process this object can prove is still its own.
- The proxy itself: through a pidfd (Linux 5.3+), which names that process
  and no other, even after its pid is reused; without one, only while our own
  ``waitid(WNOWAIT)`` shows it unreaped.
- What it started: its process group, only while our ``waitid(WNOWAIT)`` has
  seen the leader as an unreaped zombie (the group number cannot be reused
  then); or, without a group of its own, each descendant through a pidfd
  opened before its parentage was checked in /proc.
- Someone else may reap our child (gevent's or eventlet's child watcher,
  ``SIGCHLD=SIG_IGN``, ``os.wait()``, a caller's ``process.poll()``): then we
  signal nothing, close the pipes, and report the status as unknown (None),
  unless the Popen that reaped it recorded it.

``close()`` may run in a signal handler, a finalizer or the garbage collector,
inside this proxy's own recv() or send(): it takes no lock it could wait on
forever, and a finalizer hands the waiting to the spawner thread.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import threading
import time
import weakref
from typing import Any, Callable

from paramiko.ssh_exception import ProxyCommandFailure

from . import procfs, registry
from . import spawn as spawning
from .config import current
from .errors import (
    ProxyCommandClosed,
    ProxyCommandExited,
    ProxyCommandForeign,
    ProxyCommandStartError,
)
from .logs import log, note_end, raising
from .pipes import WAIT_SLICE, ProxyPipes
from .spawn import run_in_background, spawn

__all__ = ["ProxyProcess", "split_command", "terminate_all", "track", "wait_until"]

_HAVE_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
_P_PIDFD: int | None = getattr(os, "P_PIDFD", None)
_pidfd_open: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
_pidfd_send_signal: Callable[[int, int], None] | None = getattr(
    signal, "pidfd_send_signal", None
)
_PIDFD = _pidfd_open is not None and _pidfd_send_signal is not None and _P_PIDFD


def split_command(command_line: Any) -> list[str]:
    """Split like upstream does (``shlex``, no shell), failing clearly."""
    if not isinstance(command_line, str):
        raise TypeError(
            f"ProxyCommand needs a command line string, not {command_line!r}"
        )
    try:
        argv = shlex.split(command_line)
    except ValueError as exc:
        raise ProxyCommandStartError(command_line, str(exc)) from None
    if not argv:
        raise ProxyCommandStartError(command_line, "the command line is empty")
    return argv


def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Ask ``done()`` with growing pauses (0.5 to 10 ms) for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    delay = 0.0005
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.01)
    return True


def _open_pidfd(pid: int) -> int | None:
    if not _PIDFD:
        return None
    assert _pidfd_open is not None
    try:
        return _pidfd_open(pid)
    except OSError:  # an old kernel, or it ended and was reaped already
        return None


class ProxyProcess:
    """One proxy process: its pipes, its status, and what may signal it."""

    def __init__(
        self,
        argv: list[str],
        process: Any,
        own_group: bool,
        own_stdout: bool = True,
        own_stdin: bool = True,
    ) -> None:
        self.argv = argv
        self.command = " ".join(shlex.quote(a) for a in argv)
        self.process = process
        self.pid: int = process.pid
        self.own_group = own_group
        self.owner_pid = os.getpid()
        self.started = time.time()
        self.start_ticks: int | None = None
        self.proxy_ref: Callable[[], Any] = lambda: None
        self.ended_before_close = False
        self.killed = False
        self._ended = False
        self._code: int | None = None
        self._reaped = False
        self._foreign = False
        self._noted = False
        self._closer: int | None = None
        self._close_token = threading.Lock()
        self._done = threading.Event()
        self._pidfd = _open_pidfd(self.pid)
        try:
            info = procfs.stat(self.pid)
            self.start_ticks = info.start_ticks if info else None
            self.pipes = ProxyPipes(process, own_stdout, own_stdin)
        except BaseException:
            # No construction path leaves a child or a descriptor behind.
            self._abandon()
            raise
        registry.add(self)

    @classmethod
    def start(cls, argv: list[str], own_stdout: bool, own_stdin: bool) -> ProxyProcess:
        process, own_group = spawn(argv)
        return cls(argv, process, own_group, own_stdout, own_stdin)

    def _abandon(self) -> None:
        """End a proxy that never became usable: kill, reap, close its pipes."""
        self._signal(signal.SIGKILL)
        wait_until(self.poll_status, current().close_timeout)
        self._reap()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._close_pidfd()

    # -- reading and writing ------------------------------------------------

    def recv(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes as soon as any are there; ``b""`` at clean EOF."""
        if size <= 0:
            if size < 0:
                raise ValueError("negative buffersize in recv")
            return b""
        if self._foreign:
            raise ProxyCommandForeign(self.command, self.owner_pid)
        try:
            data = self.pipes.read(size, timeout, self._failed)
        except socket.timeout:
            raise
        except OSError as exc:
            raise ProxyCommandFailure(self.command, exc.strerror or str(exc)) from None
        if data:
            return data
        return self._at_eof()

    def send(self, data: bytes, timeout: float | None) -> int:
        """Write what the pipe takes now; report exactly how much that was."""
        if self._foreign:
            raise ProxyCommandForeign(self.command, self.owner_pid)
        try:
            return self.pipes.write(data, timeout)
        except socket.timeout:
            raise
        except BrokenPipeError:
            if self.pipes.closing:
                raise raising(ProxyCommandClosed(self.command)) from None
            raise self._input_closed("broken pipe") from None
        except OSError as exc:
            raise ProxyCommandFailure(self.command, exc.strerror or str(exc)) from None

    def _failed(self) -> bool:
        """Whether the proxy ended with a failure: that ends the connection
        even while a process it started still holds the pipe (an exit 0 does
        not: a launcher such as ``setsid`` hands its pipes to its child)."""
        return self.poll_status() and self._code != 0 and self._code is not None

    def _at_eof(self) -> bytes:
        """EOF: ``b""`` for a clean exit, else the exit status and stderr."""
        if self.pipes.closing:
            return b""
        ended = wait_until(self.poll_status, current().eof_grace)
        self.pipes.drain_stderr()
        if not ended:
            return b""  # its output is closed but it runs on: plain EOF
        self._note_end()
        if self._code == 0:
            return b""
        exc = ProxyCommandExited(self.command, self._code, self.pipes.stderr_tail())
        raise raising(exc)

    def _input_closed(self, why: str) -> ProxyCommandFailure:
        ended = wait_until(self.poll_status, current().eof_grace)
        self.pipes.drain_stderr()
        if not ended:
            return ProxyCommandFailure(
                self.command, f"its input is closed ({why}), but it is running"
            )
        self._note_end()
        exc = ProxyCommandExited(self.command, self._code, self.pipes.stderr_tail())
        return raising(exc)

    def _note_end(self) -> None:
        if not self._noted:
            self._noted = True
            note_end(self, self._code, self.pipes.stderr_tail())

    def check_ended(self) -> None:
        """For a read loop that does not use our recv: EOF once the proxy ended
        and nothing is left to read."""
        if self._foreign or self.pipes.closing or not self.poll_status():
            return
        if self._code == 0 and not self.pipes.writers_gone():
            return
        if self.pipes.buffered():
            return
        self.pipes.drain_stderr()
        self._note_end()
        if self._code == 0:
            raise EOFError()
        exc = ProxyCommandExited(self.command, self._code, self.pipes.stderr_tail())
        raise raising(exc)

    # -- status -------------------------------------------------------------

    def poll_status(self) -> bool:
        """Whether the proxy has ended; its status is then ``returncode``.

        It does not reap: the pid (and group number) stay ours until close().
        """
        if self._ended:
            return True
        if self._reaped or self.process.returncode is not None:
            # A Popen call reaped it (a caller's poll(), an event loop's child
            # watcher): the status it recorded is real.
            self._set_ended(self.process.returncode, reaped=True)
            return True
        if not _HAVE_WAITID:
            if self.process.poll() is None:
                return False
            self._set_ended(self.process.returncode, reaped=True)
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            if self._pidfd is not None:
                assert _P_PIDFD is not None
                info = os.waitid(_P_PIDFD, self._pidfd, flags)
            else:
                info = os.waitid(os.P_PID, self.pid, flags)
        except ChildProcessError:
            # Reaped by someone else, not through Popen: the status is lost.
            self._set_ended(self.process.returncode, reaped=True)
            return True
        if info is None or info.si_pid == 0:
            return False
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        self._set_ended(code, reaped=False)
        return True

    def _set_ended(self, code: int | None, reaped: bool) -> None:
        self._code = code
        self._reaped = self._reaped or reaped
        self._ended = True

    @property
    def returncode(self) -> int | None:
        """The exit status once ended (negative: a signal); None if unknown."""
        return self._code

    @property
    def closed(self) -> bool:
        if self.pipes.closing or self._foreign:
            return True
        if not self.poll_status():
            return False
        return self._code != 0 or self.pipes.writers_gone()

    def _reap(self) -> None:
        """Collect our zombie, so the pid is free; record its status on the Popen."""
        if self._reaped:
            return
        try:
            if self._pidfd is not None:
                assert _P_PIDFD is not None
                info = os.waitid(_P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
            else:
                info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            info = None  # someone else was first
        except AttributeError:  # no waitid (macOS): Popen reaps
            self.process.poll()
            info = None
        if info is not None and info.si_pid:
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            self._set_ended(code, reaped=True)
        self._reaped = True
        if self.process.returncode is None:
            # Keep Popen off this pid for good (as CPython does when it finds
            # the child reaped by someone else); our own status says unknown.
            self.process.returncode = 0 if self._code is None else self._code

    # -- signalling ---------------------------------------------------------

    def _signal(self, sig: int) -> None:
        """Send ``sig`` to the proxy and what it started, by the rule above."""
        if self._reaped or self._foreign:
            return
        if self._pidfd is not None:
            # Descendants first: once the proxy is gone they are no longer its.
            kin = [] if self.own_group else self._descendant_pidfds()
            try:
                for fd in [self._pidfd, *kin]:
                    try:
                        assert _pidfd_send_signal is not None
                        _pidfd_send_signal(fd, sig)
                    except OSError:
                        pass  # ended already
            finally:
                for fd in kin:
                    os.close(fd)
        elif not self.poll_status():
            # No pidfd: the pid is ours while waitid() shows it unreaped.
            with contextlib.suppress(OSError):
                os.kill(self.pid, sig)
        if self.own_group and self._zombie():
            with contextlib.suppress(OSError):
                os.killpg(self.pid, sig)

    def _zombie(self) -> bool:
        """Whether our own waitid(WNOWAIT) sees the leader ended and unreaped."""
        return self.poll_status() and not self._reaped

    def _descendant_pidfds(self) -> list[int]:
        """pidfds of the proxy's descendants, each opened before its parent was
        checked, so each names a process that was truly the proxy's."""
        assert _pidfd_open is not None
        family = {self.pid}
        found: list[int] = []
        for pid in procfs.descendants(self.pid):
            try:
                fd = _pidfd_open(pid)
            except OSError:
                continue
            info = procfs.stat(pid)
            if info is not None and info.ppid in family:
                family.add(pid)
                found.append(fd)
            else:
                os.close(fd)
        return found

    # -- closing ------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """EOF on stdin, SIGTERM, SIGKILL after half the timeout, reap, close pipes.

        Safe to call twice, from any thread, from a signal handler, and after
        the process exited.
        """
        total = current().close_timeout if timeout is None else timeout
        if not self.begin_close():
            # Another close is under way; if it is this very thread's (we
            # interrupted it), waiting would wait for ourselves.
            if self._closer != threading.get_ident():
                self._done.wait(total + 2 * WAIT_SLICE)
            return
        self.finish_close(total)

    def begin_close(self) -> bool:
        """Mark closing and give EOF on stdin; True for the one caller that
        must finish (registry.close_all() signals all before waiting for any)."""
        if not self._close_token.acquire(blocking=False):
            return False
        self._closer = threading.get_ident()
        self.ended_before_close = not self._foreign and self.poll_status()
        self.pipes.closing = True
        if not self._foreign:
            # A well-behaved proxy (ssh -W) exits by itself on EOF.
            self.pipes.close_stdin()
        return True

    def finish_close(self, timeout: float) -> None:
        """After begin_close(): signal, reap within ``timeout``, close the pipes."""
        try:
            if self._foreign:
                return
            self.terminate(timeout)
            self.pipes.release(wait=min(timeout, 2 * WAIT_SLICE))
        finally:
            self._close_pidfd()
            registry.discard(self)
            self._done.set()

    def terminate(self, total: float) -> None:
        """Signal the proxy and what it started, escalate, then reap it."""
        terminate_all([self], total)

    def _after_exit(self, total: float) -> None:
        if not self.poll_status():
            log.warning("proxy %d did not die within %.1fs", self.pid, total)
            return
        if self.own_group:
            # What the proxy started dies with it, while the group is ours.
            self._signal(signal.SIGKILL)
        self._reap()

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def release_inherited(self) -> None:
        """In a forked child: drop our copies of the pipes, signal nothing.

        Later use raises ProxyCommandForeign instead of blocking or returning
        the parent's buffered bytes.
        """
        self._foreign = True
        self._reaped = True  # the child never reaps the parent's process
        self.pipes.release_inherited()
        self._close_pidfd()
        self._close_token = threading.Lock()
        self._close_token.acquire()
        self._done = threading.Event()
        self._done.set()

    def finalize(self) -> None:
        """The ProxyCommand was garbage-collected: close it off this thread.

        The collector may run in any thread, even inside this proxy's recv():
        begin here (no waiting), finish on the spawner thread.
        """
        if os.getpid() != self.owner_pid or not self.begin_close():
            return
        total = current().close_timeout
        run_in_background(lambda: self.finish_close(total))


def terminate_all(procs: list[ProxyProcess], total: float) -> None:
    """The one escalation: SIGTERM to every proxy, SIGKILL at half of ``total``
    to those still running, then reap; many proxies cost one ``total``."""
    deadline = time.monotonic() + total
    running = [p for p in procs if not p.poll_status()]

    def all_ended() -> bool:
        return all(p.poll_status() for p in running)

    for p in running:
        p._signal(signal.SIGTERM)
    if not wait_until(all_ended, total / 2):
        for p in running:
            if not p.poll_status():
                p.killed = True
                p._signal(signal.SIGKILL)
        wait_until(all_ended, max(0.0, deadline - time.monotonic()))
    for p in procs:
        p._after_exit(total)


def track(proxy: Any, state: ProxyProcess) -> None:
    """Tie ``state`` to its ProxyCommand: a weak link, and a finalizer that
    runs when the ProxyCommand is collected (not at exit: the registry closes
    every proxy at once there)."""
    state.proxy_ref = weakref.ref(proxy)
    weakref.finalize(proxy, state.finalize).atexit = False


# The spawner thread stays while proxies it started live (their parent-death
# signal follows it).
spawning.keep_alive = registry.has_live
