"""The process behind one ProxyCommand: its pipes, its exit status, its stderr.

``ProxyProcess`` does the work for the thin methods of ``fixed.py``, which
find it on the ProxyCommand with ``state_of()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import shlex
import signal
import socket
import sys
import threading
import time
import weakref
from typing import Any

from paramiko.ssh_exception import ProxyCommandFailure

from . import registry
from .config import current
from .errors import (
    ProxyCommandClosed,
    ProxyCommandExited,
    ProxyCommandForeign,
    ProxyCommandStartError,
)
from .spawn import descendants, spawn

__all__ = ["STATE_ATTR", "ProxyProcess", "split_command", "state_of"]

log = logging.getLogger("paramiko_proxyfix")

#: Bytes asked of the pipe per read; small recv() calls are served from them.
CHUNK = 65536
#: Longest single wait, so a close() from another thread is seen promptly even
#: when a stray grandchild keeps the pipe open.
SLICE = 0.25
#: A pipe found full grows to this, so a fast proxy runs ahead of us instead
#: of stalling every 64 KiB; it shrinks back once the connection is idle.
BIG_PIPE = 1 << 20
#: Idle seconds before a grown pipe shrinks back.
SHRINK_AFTER = 1.0
#: Bytes all grown pipes of this process may add. Pipe pages count against a
#: per-user budget (fs/pipe-user-pages-soft, 64 MiB by default); past it, an
#: unprivileged user gets two-page pipes in every new process.
GROW_BUDGET = 16 << 20

# Pipe sizes can only be changed on Linux; Python 3.9 lacks the names.
_RESIZABLE = sys.platform.startswith("linux")
_F_SETPIPE_SZ: int = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ: int = getattr(fcntl, "F_GETPIPE_SZ", 1032)

_HAVE_WAITID = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
# The proxies with grown pipes, to keep all of them within GROW_BUDGET.
_grown_lock = threading.Lock()
_grown_owners: weakref.WeakSet[ProxyProcess] = weakref.WeakSet()


def _forget_grown_in_child() -> None:
    # A lock held by another thread of the parent would stay held; the
    # inherited proxies are the parent's.
    global _grown_lock, _grown_owners
    _grown_lock = threading.Lock()
    _grown_owners = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_grown_in_child)
_POLLIN = select.POLLIN | select.POLLPRI
#: Where a ProxyCommand keeps its ProxyProcess.
STATE_ATTR = "_proxyfix"


def _ms(seconds: float) -> int:
    """A poll() timeout: milliseconds rounded up, but not for float noise.

    Python rounds 100.00000000000001 ms up to 101: every idle tick of the
    transport would last 0.1 s plus a millisecond.
    """
    return max(0, int(seconds * 1000.0 + 0.999))


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


class ProxyProcess:
    """One running proxy: non-blocking pipes read with poll(), never select()."""

    def __init__(self, argv: list[str], process: Any, own_group: bool) -> None:
        self.argv = argv
        self.command = " ".join(shlex.quote(a) for a in argv)
        self.process = process
        self.pid: int = process.pid
        self.own_group = own_group
        self.owner_pid = os.getpid()
        self.started = time.time()
        self.last_io = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._errlock = threading.Lock()
        self._state_lock = threading.Lock()
        self._done = threading.Event()
        self._closing = False
        self._foreign = False
        self._fds_closed = False
        self._eof = False
        self._eof_code: int | None = None
        self._rbuf = b""
        self._rpos = 0
        self._tail = bytearray()
        self._out: int = process.stdout.fileno()
        self._in: int = process.stdin.fileno()
        self._err: int | None = (
            process.stderr.fileno() if process.stderr is not None else None
        )
        for fd in (self._out, self._in, self._err):
            if fd is not None:
                os.set_blocking(fd, False)
        self._rpoll = select.poll()
        self._rpoll.register(self._out, _POLLIN)
        if self._err is not None:
            self._rpoll.register(self._err, _POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(self._in, select.POLLOUT)
        self._probe = select.poll()
        self._probe.register(self._out, _POLLIN)
        # Pipes grown while busy: descriptor -> the size to shrink back to.
        self._grown: dict[int, int] = {}
        self._grow_after = 0.0
        self._dry = False
        self._next_exit_check = 0.0
        registry.add(self)

    @classmethod
    def start(cls, argv: list[str]) -> ProxyProcess:
        process, own_group = spawn(argv)
        return cls(argv, process, own_group)

    # -- reading ----------------------------------------------------------

    def recv(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes as soon as any are there; ``b""`` at clean EOF."""
        if size <= 0:
            if size < 0:
                raise ValueError("negative buffersize in recv")
            return b""
        with self._rlock:
            buf = self._rbuf
            if not buf:
                return self._read(size, timeout)
            pos = self._rpos
            end = pos + size
            if end < len(buf):
                self._rpos = end
                return buf[pos:end]
            self._rbuf = b""
            rest = buf[pos:] if pos else buf
            if end == len(buf) or self._eof or self._closing or self._foreign:
                return rest
            # Short of ``size`` (the transport asks for a packet at a time):
            # add what the pipe holds now rather than return short and be
            # called again.
            try:
                data = os.read(self._out, CHUNK)
            except OSError:  # nothing yet; an error shows on the next call
                return rest
            if not data:
                self._eof = True
                return rest
            return rest + self._took(data, size - len(rest))

    def _took(self, data: bytes, size: int) -> bytes:
        """Account for bytes read; keep what exceeds ``size`` for later."""
        n = len(data)
        self.bytes_in += n
        self.last_io = time.monotonic()
        if n >= CHUNK and self._out not in self._grown:
            # A full read: the proxy is ahead of us and blocks on the pipe.
            self._grow(self._out)
        if n > size:
            self._rbuf = data
            self._rpos = size
            return data[:size]
        return data

    def _read(self, size: int, timeout: float | None) -> bytes:
        deadline: float | None = None
        # An idle connection is asked every 0.1 s: after a timeout, wait in
        # poll() straight away instead of trying a read that fails.
        try_read = not self._dry
        while True:
            if self._eof or self._closing:
                return self._at_eof()
            if self._foreign:
                raise ProxyCommandForeign(self.command, self.owner_pid)
            if try_read:
                try:
                    data = os.read(self._out, size if size > CHUNK else CHUNK)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise ProxyCommandFailure(
                        self.command, exc.strerror or str(exc)
                    ) from None
                else:
                    self._dry = False
                    if not data:
                        self._eof = True
                        return self._at_eof()
                    return self._took(data, size)
            # The deadline starts at the first wait: reads that succeed at
            # once, the common case, never look at the clock.
            now = time.monotonic()
            if deadline is None and timeout is not None:
                deadline = now + timeout
            wait = SLICE
            last = False
            if deadline is not None:
                left = deadline - now
                # Time is up, but only once the pipe was looked at: by a read
                # or, when the last call found it dry, by a poll(0).
                if left <= 0 and try_read:
                    return self._timed_out(now)
                last = left <= SLICE
                if last:
                    wait = left
            try_read = True
            events = self._rpoll.poll(_ms(wait))
            if not events:
                try_read = False
                if deadline is None:
                    if self.exit_status() is not None:
                        self._eof = True
                elif last:
                    # poll() waited all that was left (PEP 475 resumes it
                    # after a signal): no need to ask the clock.
                    return self._timed_out(deadline)
                continue
            for fd, _ in events:
                if fd == self._err:
                    self._drain_stderr()

    def _timed_out(self, now: float) -> bytes:
        """Nothing arrived in time: EOF if the proxy is gone, else a timeout."""
        # A proxy that exited while a grandchild holds its pipe is EOF. Its
        # status is asked at most once a SLICE: an idle connection times out
        # ten times a second, and a waitid() costs more the more children and
        # threads the process has.
        if now >= self._next_exit_check:
            self._next_exit_check = now + SLICE
            if self.exit_status() is not None:
                self._eof = True
                return self._at_eof()
        if self._grown and now - self.last_io > SHRINK_AFTER:
            self._shrink()
        self._dry = True
        raise socket.timeout("timed out")

    def _at_eof(self) -> bytes:
        """EOF: ``b""`` for a clean exit, else the exit status and stderr."""
        if self._closing:
            return b""
        if self._eof_code is None:
            code = self.wait_exit(current().eof_grace)
            self._drain_stderr()
            if code is None or code == 0:
                return b""
            self._eof_code = code
        raise ProxyCommandExited(self.command, self._eof_code, self.stderr_tail())

    # -- writing ----------------------------------------------------------

    def send(self, data: bytes, timeout: float | None) -> int:
        """Write what the pipe takes now; report exactly how much that was."""
        with self._wlock:
            deadline: float | None = None
            while True:
                if self._closing:
                    raise ProxyCommandClosed(self.command)
                if self._foreign:
                    raise ProxyCommandForeign(self.command, self.owner_pid)
                try:
                    written = os.write(self._in, data)
                except BlockingIOError:
                    written = 0
                except BrokenPipeError:
                    if self._closing:  # our own close() ended it: not a failure
                        raise ProxyCommandClosed(self.command) from None
                    raise self._dead("its input is closed (broken pipe)") from None
                except OSError as exc:
                    raise ProxyCommandFailure(
                        self.command, exc.strerror or str(exc)
                    ) from None
                # A full pipe: the proxy reads slower than we write. Grown,
                # it takes the rest at once.
                full = written < len(data) and self._in not in self._grown
                if full and self._grow(self._in) and not written:
                    continue
                if written or not data:
                    self.bytes_out += written
                    self.last_io = time.monotonic()
                    return written
                now = time.monotonic()
                if deadline is None and timeout is not None:
                    deadline = now + timeout
                wait = SLICE
                if deadline is not None:
                    wait = min(wait, deadline - now)
                    if wait <= 0:
                        raise socket.timeout("timed out")
                self._wpoll.poll(_ms(wait))

    # -- pipe sizes -------------------------------------------------------

    def _grow(self, fd: int) -> bool:
        """Let a busy pipe hold BIG_PIPE bytes, within GROW_BUDGET."""
        now = time.monotonic()
        if not _RESIZABLE or now < self._grow_after:
            return False
        with _grown_lock:
            live = (p for p in _grown_owners if not (p._closing or p._fds_closed))
            used = sum(len(p._grown) for p in live)
            try:
                if used * BIG_PIPE >= GROW_BUDGET:
                    raise OSError("over this process's budget")
                size = fcntl.fcntl(fd, _F_GETPIPE_SZ)
                if size < BIG_PIPE:
                    fcntl.fcntl(fd, _F_SETPIPE_SZ, BIG_PIPE)
            except OSError:
                # Over a budget (ours, or the user's: EPERM): not again soon.
                self._grow_after = now + SHRINK_AFTER
                return False
            self._grown[fd] = size
            _grown_owners.add(self)
        return True

    def _shrink(self) -> None:
        """Give grown pipes back their normal size (called with _rlock held)."""
        with _grown_lock:
            for fd, size in list(self._grown.items()):
                # stdin: not while a writer is at work (it is not idle then),
                # nor once close() may have closed it (it does so under _wlock).
                stdin = fd == self._in
                if stdin and not self._wlock.acquire(blocking=False):
                    continue
                try:
                    if not (stdin and self._closing):
                        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
                        del self._grown[fd]
                except OSError:
                    pass  # EBUSY: it holds more than that; retry when idle again
                finally:
                    if stdin:
                        self._wlock.release()
            if not self._grown:
                _grown_owners.discard(self)

    def _dead(self, what: str) -> ProxyCommandFailure:
        code = self.wait_exit(current().eof_grace)
        self._drain_stderr()
        if code is None:
            return ProxyCommandFailure(self.command, f"{what}, but it is running")
        return ProxyCommandExited(self.command, code, self.stderr_tail())

    # -- stderr -----------------------------------------------------------

    def _drain_stderr(self) -> None:
        """Read what stderr holds now: keep a bounded tail, log it at DEBUG."""
        with self._errlock:
            fd = self._err
            if fd is None or self._fds_closed:
                return
            limit = current().stderr_tail
            while True:
                try:
                    chunk = os.read(fd, CHUNK)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    chunk = b""
                if not chunk:
                    # EOF: stop polling it, or poll() would report it forever.
                    self._rpoll.unregister(fd)
                    self._err = None
                    return
                self._tail += chunk
                if len(self._tail) > limit:
                    del self._tail[: len(self._tail) - limit]
                if log.isEnabledFor(logging.DEBUG):
                    text = chunk.decode("utf-8", "replace").rstrip("\n")
                    log.debug("proxy %d stderr: %s", self.pid, text)

    def stderr_tail(self) -> str:
        return bytes(self._tail).decode("utf-8", "replace")

    # -- process state ----------------------------------------------------

    def exit_status(self) -> int | None:
        """The exit status (negative: signal) once the process ended, else None.

        It does not reap, so the process group stays ours to signal until
        close() reaps it.
        """
        code: int | None = self.process.returncode
        if code is not None:
            return code
        if not _HAVE_WAITID:
            return self.process.poll()  # type: ignore[no-any-return]
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # Reaped by someone else (a SIGCHLD handler): its status is lost.
            return self.process.poll() or 0
        if info is None or info.si_pid == 0:
            return None
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status

    def wait_exit(self, timeout: float) -> int | None:
        """exit_status(), waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            code = self.exit_status()
            if code is not None:
                return code
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.01)

    def pending_output(self) -> bool:
        """Whether unread output is buffered here or waiting in the pipe."""
        if self._rbuf:
            return True
        if not self._rlock.acquire(blocking=False):
            return True  # a reader is at work and will see what is there
        try:
            if self._fds_closed or self._eof:
                return False
            return any(ev & _POLLIN for _, ev in self._probe.poll(0))
        finally:
            self._rlock.release()

    @property
    def closed(self) -> bool:
        return self._closing or self.exit_status() is not None

    # -- closing ----------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """EOF on stdin, SIGTERM, SIGKILL after half the timeout, reap, close pipes.

        Safe to call twice, from any thread, and after the process exited.
        """
        if not self.begin_close():
            self._done.wait(current().close_timeout + 2 * SLICE)
            return
        self.finish_close(current().close_timeout if timeout is None else timeout)

    def begin_close(self) -> bool:
        """Mark closing, EOF on stdin; True for the one caller that must finish.

        Split from close() so that registry.close_all() can signal every proxy
        before it waits for any.
        """
        with self._state_lock:
            first = not self._closing
            self._closing = True
        # A well-behaved proxy (ssh -W) exits by itself on EOF.
        if first and not self._foreign and self._wlock.acquire(blocking=False):
            try:
                self._close_file(self.process.stdin)
            finally:
                self._wlock.release()
        return first

    def finish_close(self, timeout: float) -> None:
        """After begin_close(): signal, reap within ``timeout``, close the pipes."""
        try:
            if self._foreign:
                self.release_inherited()
                return
            self.terminate(timeout)
            self._release_pipes()
        finally:
            registry.discard(self)
            self._done.set()

    def terminate(self, total: float) -> None:
        """Signal the proxy and what it started, escalate, then reap it."""
        deadline = time.monotonic() + total
        if self.exit_status() is None:
            self.signal(signal.SIGTERM)
            if self.wait_exit(total / 2) is None:
                self.signal(signal.SIGKILL)
                self.wait_exit(max(0.0, deadline - time.monotonic()))
        if self.exit_status() is None:
            log.warning("proxy %d did not die within %.1fs", self.pid, total)
            return
        if self.own_group:
            # The leader is a zombie, not reaped yet: the group id is still
            # ours, so this reaches only what the proxy started.
            self._kill_group(signal.SIGKILL)
        self.process.wait()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the proxy and the processes it started."""
        if self.process.returncode is not None:
            return  # reaped: its pid may belong to someone else now
        if self.own_group:
            self._kill_group(sig)
            return
        for pid in [self.pid, *descendants(self.pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _kill_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _release_pipes(self) -> None:
        # Wait for readers and writers to leave before the descriptors go, so
        # no thread ever reads a closed or reused descriptor.
        with self._rlock, self._wlock:
            self._drain_stderr()
            with self._errlock:
                self._fds_closed = True
                for stream in (self.process.stdin, self.process.stdout):
                    self._close_file(stream)
                self._close_file(self.process.stderr)

    def release_inherited(self) -> None:
        """In a forked child: drop our copies of the pipes, signal nothing.

        Takes no lock and replaces them all: a lock held by another thread of
        the parent at fork (the transport thread sits in recv) would stay held
        forever. Later use raises ProxyCommandForeign instead of blocking or
        returning the parent's buffered bytes.
        """
        self._foreign = True
        self._fds_closed = True
        self._eof = False  # the parent's EOF: here, any use is foreign
        self._rbuf = b""
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._errlock = threading.Lock()
        self._state_lock = threading.Lock()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            self._close_file(stream)
        # The child never reaps the parent's process.
        self.process.returncode = -1
        self._done = threading.Event()
        self._done.set()

    @staticmethod
    def _close_file(stream: Any) -> None:
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    def finalize(self) -> None:
        """Called when the ProxyCommand is garbage-collected or at exit."""
        if os.getpid() == self.owner_pid and not self._closing:
            self.close()


def state_of(proxy: Any) -> ProxyProcess:
    """The ProxyProcess of a ProxyCommand, adopting one started before install."""
    state: ProxyProcess | None = proxy.__dict__.get(STATE_ATTR)
    if state is None:
        with _adopt_lock:
            state = proxy.__dict__.get(STATE_ATTR)
            if state is None:
                state = _adopt(proxy)
    return state


_adopt_lock = threading.Lock()


def _adopt(proxy: Any) -> ProxyProcess:
    process = proxy.process
    try:
        own_group = os.getpgid(process.pid) == process.pid
    except OSError:
        own_group = False
    state = ProxyProcess(list(proxy.cmd), process, own_group)
    proxy.__dict__[STATE_ATTR] = state
    weakref.finalize(proxy, state.finalize)
    return state
