"""Growing a busy proxy's output pipe, within a budget, and shrinking it back.

A pipe found full grows to BIG_PIPE, so a fast proxy runs ahead of us
instead of stalling every 64 KiB. Pipe pages count against a per-user budget
(``fs/pipe-user-pages-soft``, 64 MiB by default) shared by every process of
the user; past it, every new pipe of that user, in any program, gets two
pages. So an unprivileged process grows at most 1/64 of it (1 MiB: one grown
pipe at a time), and none once a fresh pipe of the user comes out small (the
user is at the limit). Root, whom the limit does not bind, may grow 16 MiB.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

__all__ = ["BIG_PIPE", "CHUNK", "SHRINK_AFTER", "Grown", "reset_after_fork"]

#: Bytes asked of the pipe per read, and a pipe's normal size.
CHUNK = 65536
#: What a busy pipe grows to.
BIG_PIPE = 1 << 20
#: Idle seconds before a grown pipe shrinks back.
SHRINK_AFTER = 1.0
# Python 3.9 lacks the names.
_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032


def _budget() -> int:
    """Bytes all grown pipes of this process may add."""
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


def _user_over_soft_limit(fcntl: object) -> bool:
    """Whether this user's new pipes already come out shrunken."""
    try:
        r, w = os.pipe()
    except OSError:
        return True
    try:
        return int(fcntl.fcntl(r, _F_GETPIPE_SZ)) < CHUNK  # type: ignore[attr-defined]
    except OSError:
        return True
    finally:
        os.close(r)
        os.close(w)


_BUDGET = _budget()
_lock = threading.Lock()
#: Bytes the grown pipes of this process add beyond their normal size.
_total = 0


def reset_after_fork() -> None:
    """In a forked child (see lifecycle.py): the grown pipes are the parent's."""
    global _lock, _total
    _lock = threading.Lock()
    _total = 0


class Grown:
    """One grown pipe, held through a descriptor of its own, so that it can be
    shrunk from any thread without racing the close of the proxy's."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = os.dup(fd)
        self.size = size

    @classmethod
    def grow(cls, fd: int) -> Grown | None:
        """Grow the pipe behind ``fd`` within the budget; None if it may not."""
        global _total
        try:
            import fcntl
        except ImportError:
            return None
        with _lock:
            try:
                size = fcntl.fcntl(fd, _F_GETPIPE_SZ)
                extra = BIG_PIPE - size
                if extra <= 0 or _total + extra > _BUDGET:
                    return None
                if _user_over_soft_limit(fcntl):
                    return None
                fcntl.fcntl(fd, _F_SETPIPE_SZ, BIG_PIPE)
                grown = cls(fd, size)
            except OSError:  # EPERM: over the user's limit; EMFILE for dup
                return None
            _total += extra
            return grown

    def shrink(self) -> bool:
        """Back to the normal size; False if the pipe still holds more (EBUSY)."""
        global _total
        import fcntl

        with _lock:
            if self.fd < 0:
                return True
            try:
                fcntl.fcntl(self.fd, _F_SETPIPE_SZ, self.size)
            except OSError:
                return False
            self._release()
            return True

    def release(self) -> None:
        """The proxy is closed: give the budget back, whatever the pipe holds."""
        with _lock:
            self._release()

    def forget(self) -> None:
        """In a forked child: close our copy, count nothing (the budget is new)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1

    def _release(self) -> None:
        global _total
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
            _total -= BIG_PIPE - self.size
