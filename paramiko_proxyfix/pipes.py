"""The proxy's three pipes: buffered non-blocking reads and writes, the stderr tail.

Bytes only: no signals, no exit status. Waits use ``select.poll`` (no limit on
descriptor numbers), or ``select.select`` where an event loop took ``poll``
away (eventlet's green select rides on its hub). Each wait lasts at most
``WAIT_SLICE``, so a close() from another thread is seen promptly, and a
descriptor is only ever closed by the thread that holds its lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import sys
import threading
import time
from typing import Any, Callable

__all__ = ["CHUNK", "WAIT_SLICE", "ProxyPipes", "poll_timeout_ms"]

log = logging.getLogger("paramiko_proxyfix")

#: Bytes asked of the pipe per read; small recv() calls are served from them.
CHUNK = 65536
#: Longest single wait.
WAIT_SLICE = 0.25
#: A pipe found full grows to this, so a fast proxy runs ahead of us instead
#: of stalling every 64 KiB; it shrinks back once the connection is idle.
BIG_PIPE = 1 << 20
#: Idle seconds before a grown pipe shrinks back.
SHRINK_AFTER = 1.0
_POLLIN = getattr(select, "POLLIN", 1) | getattr(select, "POLLPRI", 2)
_POLLOUT = getattr(select, "POLLOUT", 4)


def poll_timeout_ms(seconds: float) -> int:
    """A poll() timeout: milliseconds rounded up, but not for float noise.

    Python rounds 100.00000000000001 ms up to 101: every idle tick of the
    transport would last 0.1 s plus a millisecond.
    """
    return max(0, int(seconds * 1000.0 + 0.999))


# -- pipe growth within a budget ----------------------------------------------


def _grow_budget() -> int:
    """Bytes all grown pipes of this process may add.

    Pipe pages count against a per-user budget (``fs/pipe-user-pages-soft``,
    64 MiB by default) shared by every process of the user; past it, every
    new pipe of that user gets two pages. An unprivileged process takes at
    most 1/64 of it (1 MiB: one grown pipe); root is not limited.
    """
    if not sys.platform.startswith("linux"):
        return 0
    if os.geteuid() == 0:
        return 16 << 20
    try:
        with open("/proc/sys/fs/pipe-user-pages-soft") as f:
            pages = int(f.read())
    except (OSError, ValueError):
        return 0
    if pages == 0:  # no limit
        return 16 << 20
    return pages * 4096 // 64


def _user_over_soft_limit() -> bool:
    """Whether this user's new pipes already come out shrunken."""
    try:
        import fcntl

        r, w = os.pipe()
    except (ImportError, OSError):
        return True
    try:
        return fcntl.fcntl(r, _F_GETPIPE_SZ) < CHUNK
    except OSError:
        return True
    finally:
        os.close(r)
        os.close(w)


# Python 3.9 lacks the names.
_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032
_grow_lock = threading.Lock()
#: Bytes the grown pipes of this process add beyond their normal size.
_grown_total = 0


def _forget_growth_in_child() -> None:
    # Another parent thread may have held the lock; the pipes are the parent's.
    global _grow_lock, _grown_total
    _grow_lock = threading.Lock()
    _grown_total = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_growth_in_child)


class ProxyPipes:
    """Non-blocking pipes to one proxy; every wait bounded by WAIT_SLICE."""

    def __init__(self, process: Any, own_stdout: bool, own_stdin: bool) -> None:
        self.process = process
        self.out: int = process.stdout.fileno()
        self.inp: int = process.stdin.fileno()
        self.err: int | None = (
            process.stderr.fileno() if process.stderr is not None else None
        )
        #: Set by close(): readers and writers stop and close what they hold.
        self.closing = False
        self.eof = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_io = time.monotonic()
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._errlock = threading.Lock()
        # Which thread holds each lock: close() never waits for its own thread.
        self._rholder: int | None = None
        self._wholder: int | None = None
        self._rbuf = b""
        self._rpos = 0
        self._tail = bytearray()
        self._idle = False
        self._grown: dict[int, int] = {}
        self._grow_after = 0.0
        self._next_check = 0.0
        self._out_nonblocking = False
        self._in_nonblocking = False
        if self.err is not None:
            os.set_blocking(self.err, False)
        # A subclass that reads or writes the pipes itself keeps them blocking
        # until it calls our recv or send.
        if own_stdout:
            self._own_stdout()
        if own_stdin:
            self._own_stdin()
        poll = getattr(select, "poll", None)  # looked up now: monkey-patching
        self._rpoll: Any = None
        self._wpoll: Any = None
        if poll is not None:
            self._rpoll = poll()
            self._rpoll.register(self.out, _POLLIN)
            if self.err is not None:
                self._rpoll.register(self.err, _POLLIN)
            self._wpoll = poll()
            self._wpoll.register(self.inp, _POLLOUT)

    def _own_stdout(self) -> None:
        os.set_blocking(self.out, False)
        self._out_nonblocking = True

    def _own_stdin(self) -> None:
        os.set_blocking(self.inp, False)
        self._in_nonblocking = True

    # -- waiting ----------------------------------------------------------

    def _wait_readable(self, seconds: float) -> list[int]:
        if self._rpoll is not None:
            return [fd for fd, _ in self._rpoll.poll(poll_timeout_ms(seconds))]
        fds = [self.out] if self.err is None else [self.out, self.err]
        return list(select.select(fds, [], [], seconds)[0])

    def _wait_writable(self, seconds: float) -> None:
        if self._wpoll is not None:
            self._wpoll.poll(poll_timeout_ms(seconds))
        else:
            select.select([], [self.inp], [self.inp], seconds)

    # -- reading ----------------------------------------------------------

    def read(
        self, size: int, timeout: float | None, ended: Callable[[], bool]
    ) -> bytes:
        """Up to ``size`` bytes as soon as any are there; ``b""`` at EOF.

        ``ended()`` is asked, at most once a WAIT_SLICE while nothing comes,
        whether the proxy ended in a way that ends the connection even though
        a process it started still holds the pipe.
        """
        self._rlock.acquire()
        self._rholder = threading.get_ident()
        try:
            buf = self._rbuf
            if self.closing and not buf:
                return b""  # its descriptor may be closed, even reused
            if not self._out_nonblocking:
                self._own_stdout()
            if not buf:
                return self._read(size, timeout, ended)
            pos = self._rpos
            end = pos + size
            if end < len(buf):
                self._rpos = end
                return buf[pos:end]
            self._rbuf = b""
            rest = buf[pos:] if pos else buf
            if end == len(buf) or self.eof or self.closing:
                return rest
            # Short of ``size`` (the transport asks for a packet at a time):
            # add what the pipe holds now rather than return short and be
            # called again.
            try:
                data = os.read(self.out, CHUNK)
            except OSError:  # nothing yet; an error shows on the next call
                return rest
            if not data:
                self.eof = True
                return rest
            return rest + self._count_read(data, size - len(rest))
        finally:
            self._rholder = None
            if self.closing:
                self._close_read_side()
            self._rlock.release()

    def _count_read(self, data: bytes, size: int) -> bytes:
        """Account for bytes read; keep what exceeds ``size`` for later."""
        n = len(data)
        self.bytes_in += n
        self.last_io = time.monotonic()
        if n >= CHUNK and self.out not in self._grown:
            # A full read: the proxy is ahead of us and blocks on the pipe.
            self._grow(self.out)
        if n > size:
            self._rbuf = data
            self._rpos = size
            return data[:size]
        return data

    def _read(
        self, size: int, timeout: float | None, ended: Callable[[], bool]
    ) -> bytes:
        deadline: float | None = None
        # An idle connection is asked every 0.1 s: after a timeout, wait
        # straight away instead of trying a read that fails.
        try_read = not self._idle
        while True:
            if self.eof or self.closing:
                return b""
            if try_read:
                try:
                    data = os.read(self.out, size if size > CHUNK else CHUNK)
                except BlockingIOError:
                    pass
                else:
                    self._idle = False
                    if not data:
                        self.eof = True
                        return b""
                    return self._count_read(data, size)
            # The deadline starts at the first wait: reads that succeed at
            # once, the common case, never look at the clock.
            now = time.monotonic()
            if deadline is None and timeout is not None:
                deadline = now + timeout
            wait = WAIT_SLICE
            last = False
            if deadline is not None:
                left = deadline - now
                # Time is up, but only once the pipe was looked at: by a read
                # or, when the last call found it dry, by a wait of 0.
                if left <= 0 and try_read:
                    return self._timed_out(now, ended)
                last = left <= WAIT_SLICE
                if last:
                    wait = max(left, 0.0)
            try_read = True
            ready = self._wait_readable(wait)
            if not ready:
                try_read = False
                if deadline is None:
                    if ended():
                        return b""
                elif last:
                    return self._timed_out(deadline, ended)
                continue
            if self.err is not None and self.err in ready:
                self.drain_stderr()

    def _timed_out(self, now: float, ended: Callable[[], bool]) -> bytes:
        """Nothing arrived in time: EOF if the proxy is gone, else a timeout."""
        # ended() costs a waitid(): at most once a WAIT_SLICE, as an idle
        # connection times out ten times a second.
        if now >= self._next_check:
            self._next_check = now + WAIT_SLICE
            if ended():
                return b""
        if self._grown and now - self.last_io > SHRINK_AFTER:
            self._shrink()
        self._idle = True
        raise socket.timeout("timed out")

    def buffered(self) -> bool:
        """Whether unread output is buffered here or waiting in the pipe."""
        if self._rbuf:
            return True
        if not self._rlock.acquire(blocking=False):
            return True  # a reader is at work and will see what is there
        try:
            if self.closing or self.eof:
                return False
            return self.out in self._wait_readable(0)
        finally:
            self._rlock.release()

    def writers_gone(self) -> bool:
        """Whether every writer of stdout closed it (poll's POLLHUP)."""
        if self.closing:
            return True
        probe = getattr(select, "poll", None)
        if probe is None:
            return True  # cannot tell: take the exit as the end
        p = probe()
        p.register(self.out, _POLLIN)
        return any(ev & getattr(select, "POLLHUP", 16) for _, ev in p.poll(0))

    # -- writing ----------------------------------------------------------

    def write(self, data: bytes, timeout: float | None) -> int:
        """Write what the pipe takes now; report exactly how much that was.

        Raises BrokenPipeError when the proxy's input is closed, and
        ``socket.timeout`` when nothing could be written in time.
        """
        self._wlock.acquire()
        self._wholder = threading.get_ident()
        try:
            if self.closing:
                raise BrokenPipeError(32, "the proxy was closed")
            if not self._in_nonblocking:
                self._own_stdin()
            deadline: float | None = None
            while True:
                if self.closing:
                    raise BrokenPipeError(32, "the proxy was closed")
                try:
                    written = os.write(self.inp, data)
                except BlockingIOError:
                    written = 0
                # A full pipe: the proxy reads slower than we write. Grown,
                # it takes the rest at once.
                full = written < len(data) and self.inp not in self._grown
                if full and self._grow(self.inp) and not written:
                    continue
                if written or not data:
                    self.bytes_out += written
                    self.last_io = time.monotonic()
                    return written
                now = time.monotonic()
                if deadline is None and timeout is not None:
                    deadline = now + timeout
                wait = WAIT_SLICE
                if deadline is not None:
                    wait = min(wait, deadline - now)
                    if wait <= 0:
                        raise socket.timeout("timed out")
                self._wait_writable(wait)
        finally:
            self._wholder = None
            if self.closing:
                self._close_file(self.process.stdin)
            self._wlock.release()

    def close_stdin(self) -> None:
        """EOF for the proxy, unless a writer is at work (close() then ends it)."""
        if self._wlock.acquire(blocking=False):
            try:
                self._close_file(self.process.stdin)
            finally:
                self._wlock.release()

    # -- pipe sizes -------------------------------------------------------

    def _grow(self, fd: int) -> bool:
        """Let a busy pipe hold BIG_PIPE bytes, within this process's budget."""
        global _grown_total
        now = time.monotonic()
        if now < self._grow_after:
            return False
        import fcntl

        with _grow_lock:
            try:
                size = fcntl.fcntl(fd, _F_GETPIPE_SZ)
                if size >= BIG_PIPE:
                    return False
                extra = BIG_PIPE - size
                if _grown_total + extra > _BUDGET or _user_over_soft_limit():
                    raise OSError("over the budget")
                fcntl.fcntl(fd, _F_SETPIPE_SZ, BIG_PIPE)
            except OSError:
                # Over a budget (ours, or the user's: EPERM): not again soon.
                self._grow_after = now + SHRINK_AFTER
                return False
            self._grown[fd] = size
            _grown_total += extra
        return True

    def _shrink(self) -> None:
        """Give grown pipes back their normal size (called with the read lock)."""
        global _grown_total
        import fcntl

        with _grow_lock:
            for fd, size in list(self._grown.items()):
                # stdin: not while a writer is at work (it is not idle then).
                stdin = fd == self.inp
                if stdin and not self._wlock.acquire(blocking=False):
                    continue
                try:
                    if not self.closing:
                        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
                    del self._grown[fd]
                    _grown_total -= BIG_PIPE - size
                except OSError:
                    pass  # EBUSY: it holds more than that; retry when idle again
                finally:
                    if stdin:
                        self._wlock.release()

    def _forget_growth(self) -> None:
        global _grown_total
        with _grow_lock:
            for size in self._grown.values():
                _grown_total -= BIG_PIPE - size
            self._grown.clear()

    # -- stderr -----------------------------------------------------------

    def drain_stderr(self, limit: int | None = None) -> None:
        """Read what stderr holds now: keep a bounded tail, log it at DEBUG."""
        if not self._errlock.acquire(blocking=False):
            return  # another thread is draining it right now
        try:
            fd = self.err
            if fd is None:
                return
            from .config import current

            keep = current().stderr_tail if limit is None else limit
            while True:
                try:
                    chunk = os.read(fd, CHUNK)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    chunk = b""
                if not chunk:
                    # EOF: stop waiting on it, or the wait would report it forever.
                    if self._rpoll is not None:
                        self._rpoll.unregister(fd)
                    self.err = None
                    return
                self._tail += chunk
                if len(self._tail) > keep:
                    del self._tail[: len(self._tail) - keep]
                if log.isEnabledFor(logging.DEBUG):
                    text = chunk.decode("utf-8", "replace").rstrip("\n")
                    log.debug("proxy %d stderr: %s", self.process.pid, text)
        finally:
            if self.closing:
                self._close_file(self.process.stderr)
            self._errlock.release()

    def stderr_tail(self) -> str:
        return bytes(self._tail).decode("utf-8", "replace")

    # -- closing ----------------------------------------------------------

    def release(self, wait: float) -> None:
        """Close all three pipes; those another thread is using, when it leaves.

        Waits up to ``wait`` seconds for a reader or writer in another thread
        (it notices ``closing`` within WAIT_SLICE), never for this thread: a
        signal handler or finalizer may run inside our own recv() or send().
        """
        self.closing = True
        me = threading.get_ident()
        for lock, holder, close in (
            (self._rlock, self._rholder, self._close_read_side),
            (self._wlock, self._wholder, lambda: self._close_file(self.process.stdin)),
        ):
            if holder == me or not lock.acquire(timeout=wait):
                continue  # its holder closes it on the way out
            try:
                close()
            finally:
                lock.release()
        self._forget_growth()

    def _close_read_side(self) -> None:
        """stdout, and stderr after a last drain (called with the read lock)."""
        self._close_file(self.process.stdout)
        self.drain_stderr()  # closes stderr too, as closing is set

    def release_inherited(self) -> None:
        """In a forked child: drop our copies of the pipes, taking no lock.

        A lock held by another thread of the parent at fork (the transport
        thread sits in recv) would stay held forever here.
        """
        self.closing = True
        self._rbuf = b""
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._errlock = threading.Lock()
        self._grown.clear()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            self._close_file(stream)

    @staticmethod
    def _close_file(stream: Any) -> None:
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


_BUDGET = _grow_budget()
