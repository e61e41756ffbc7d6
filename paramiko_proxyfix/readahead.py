"""Reading the proxy's output ahead, and counting its traffic.

paramiko reads a packet in two small pieces (its first block, then the
rest), so each read asks the pipe for up to 64 KiB and serves the small ones
from what came: most recv() calls cost no system call. These run under the
fix's own read or write lock (they are its ``_read`` and ``_write``).
"""

from __future__ import annotations

import os
import time

from .pipesize import CHUNK, SHRINK_AFTER, Grown

__all__ = ["ReadAhead"]


class ReadAhead:
    """One proxy's output buffer, I/O counters and grown output pipe."""

    def __init__(self, out: int, inp: int) -> None:
        self.out = out
        self.inp = inp
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_io = time.monotonic()
        self.grown: Grown | None = None
        self._buf = b""
        self._pos = 0

    def read(self, size: int) -> bytes | None:
        """Up to ``size`` bytes; None if none are there yet, b"" at EOF."""
        buf = self._buf
        if not buf:
            return self._fill(size)
        pos = self._pos
        end = pos + size
        if end < len(buf):
            self._pos = end
            return buf[pos:end]
        self._buf = b""
        rest = buf[pos:] if pos else buf
        if end == len(buf):
            return rest
        # Short of ``size`` (paramiko asks for the rest of a packet at once):
        # add what the pipe holds now rather than be called again.
        more = self._fill(size - len(rest))
        return rest + more if more else rest

    def _fill(self, size: int) -> bytes | None:
        try:
            data = os.read(self.out, size if size > CHUNK else CHUNK)
        except BlockingIOError:
            return None
        n = len(data)
        if n:
            self.bytes_in += n
            self.last_io = time.monotonic()
            if n >= CHUNK and self.grown is None:
                # A full read: the proxy is ahead of us, blocked on the pipe.
                self.grown = Grown.grow(self.out)
        if n > size:
            self._buf = data
            self._pos = size
            return data[:size]
        return data

    def write(self, data: bytes) -> int | None:
        """What the proxy's input takes now; None if nothing fits."""
        try:
            n = os.write(self.inp, data)
        except BlockingIOError:
            return None
        self.bytes_out += n
        self.last_io = time.monotonic()
        return n

    def idle(self, now: float) -> None:
        """Called on an idle tick: give a grown pipe back once idle long enough."""
        grown = self.grown
        if grown is not None and now - self.last_io > SHRINK_AFTER and grown.shrink():
            self.grown = None

    def release(self) -> None:
        """The proxy is closed: give the grown pipe's budget back."""
        grown, self.grown = self.grown, None
        if grown is not None:
            grown.release()
