"""The fleet view's run directory: found, created, opened, checked, used by descriptor.

Where: ``$XDG_RUNTIME_DIR/paramiko_proxyfix`` if XDG_RUNTIME_DIR names a
directory (an absolute path), else ``<tempdir>/paramiko_proxyfix-<uid>``
(``tempfile.gettempdir()``: /tmp unless TMPDIR says otherwise). That name is
predictable, so anyone may create it first; the same rules hold for both:

- the parent is opened as a directory and must belong to us or root, and be
  writable by no one else unless it is sticky (as /tmp is): in a non-sticky
  shared parent anyone could rename our directory away or swap one in;
- the directory is created (mode 0700) and opened relative to the parent's
  descriptor with ``O_DIRECTORY | O_NOFOLLOW``: a symlink is refused, and
  what is checked is what was opened. ``fstat`` of that descriptor must show
  our uid; our own directory with another mode is set back to 0700;
- every file operation is relative to that descriptor (``dir_fd``): a
  directory renamed or swapped at the path afterwards changes nothing.
  Snapshots are written to a temporary file opened ``O_CREAT | O_EXCL |
  O_NOFOLLOW`` and renamed over the old one; only regular files of ours, of
  bounded size, are read.

A refused directory raises :class:`Refused` (the fleet reply then says the
view is blind) and is logged as a WARNING once per process, then at DEBUG.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile

__all__ = ["MAX_FILE", "Refused", "RunDir", "location", "open_dir", "warn_refused"]

log = logging.getLogger("paramiko_proxyfix")

NAME = "paramiko_proxyfix"
#: The largest file read from the run directory, in bytes.
MAX_FILE = 1 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC

#: The pid of the process that logged its WARNING already.
_warned_pid = 0


class Refused(Exception):
    """The run directory may not be used; ``str()`` says why."""


def location() -> tuple[str, str]:
    """(parent directory, name) of the run directory."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return xdg, NAME
    return tempfile.gettempdir(), f"{NAME}-{os.getuid()}"


def _check_parent(fd: int, path: str) -> None:
    st = os.fstat(fd)
    if st.st_uid not in (os.geteuid(), 0):
        raise Refused(f"{path} belongs to uid {st.st_uid}, neither us nor root")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise Refused(
            f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}) "
            "and not sticky"
        )


def _open_in(parent_fd: int, name: str, path: str) -> int:
    """``name`` in the parent, opened as a directory without following a symlink."""
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise Refused(f"{path} is a symbolic link") from None
            raise Refused(f"{path} is not a directory") from None
        raise Refused(f"cannot open {path}: {exc.strerror}") from None


def _check_dir(fd: int, path: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):  # O_DIRECTORY says so; never assumed
        raise Refused(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise Refused(f"{path} belongs to uid {st.st_uid}, not {os.geteuid()}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        # Ours: only we (or root) could have changed it. Back to 0700; files
        # in it that are not ours are never read.
        log.debug("%s had mode %04o: set to 0700", path, stat.S_IMODE(st.st_mode))
        os.fchmod(fd, 0o700)


def open_dir(create: bool) -> RunDir | None:
    """The run directory, opened and checked; None if it does not exist and
    ``create`` is false. Raises :class:`Refused` if it may not be used."""
    parent, name = location()
    path = os.path.join(parent, name)
    try:
        parent_fd = os.open(parent, _DIR_FLAGS)
    except OSError as exc:
        raise Refused(f"cannot open {parent}: {exc.strerror}") from None
    try:
        _check_parent(parent_fd, parent)
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise Refused(f"cannot create {path}: {exc.strerror}") from None
        try:
            fd = _open_in(parent_fd, name, path)
        except FileNotFoundError:
            if create:
                raise Refused(f"{path} vanished as it was created") from None
            return None
    finally:
        os.close(parent_fd)
    try:
        _check_dir(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return RunDir(fd, path)


def warn_refused(reason: str) -> None:
    """Log a refused run directory: a WARNING once per process, then DEBUG."""
    global _warned_pid
    pid = os.getpid()
    if _warned_pid == pid:
        log.debug("run directory refused: %s", reason)
        return
    _warned_pid = pid
    log.warning(
        "paramiko_proxyfix: run directory refused: %s; the fleet view cannot "
        "see the pool processes' proxies (pid %d; said once per process)",
        reason,
        pid,
    )


def _plain(name: str) -> str:
    """A file name directly in the directory (no path, no dot entries)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")
    return name


class RunDir:
    """The opened run directory; every operation relative to its descriptor."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd: int | None = fd
        self.path = path

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def _dir(self) -> int:
        if self.fd is None:
            raise ValueError("the run directory is closed")
        return self.fd

    def names(self) -> list[str]:
        """The names in the directory."""
        return os.listdir(self._dir())

    def write(self, name: str, data: bytes) -> None:
        """Replace ``name`` by a file holding ``data``, atomically (rename)."""
        d = self._dir()
        tmp = f".{_plain(name)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=d)
        except FileExistsError:  # left by a killed writer of that pid
            self.unlink(tmp)
            fd = os.open(tmp, flags, 0o600, dir_fd=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=d, dst_dir_fd=d)
        except BaseException:
            self.unlink(tmp)
            raise

    def read(self, name: str, limit: int = MAX_FILE) -> bytes | None:
        """The content of ``name`` if it is a regular file of ours of at most
        ``limit`` bytes; else None."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
        try:
            fd = os.open(_plain(name), flags, dir_fd=self._dir())
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_uid != os.geteuid()
                or st.st_size > limit
            ):
                return None
            data = f.read(limit + 1)
        return data if len(data) <= limit else None

    def unlink(self, name: str) -> bool:
        """Remove ``name``; whether it was there."""
        try:
            os.unlink(_plain(name), dir_fd=self._dir())
        except FileNotFoundError:
            return False
        return True
