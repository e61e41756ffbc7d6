"""Failing as exec() would, before setpriv stands between the caller and the exec.

With ``setpriv --pdeathsig KILL -- CMD`` it is setpriv that execs the proxy,
and a command that cannot run would become setpriv's exit status 127 instead
of the ``FileNotFoundError`` or ``PermissionError`` upstream's Popen raises.
So the command is checked first, the way the kernel and ``execvp`` would.
"""

from __future__ import annotations

import errno
import os

__all__ = ["check_file", "check_runnable"]


def _binfmt_misc_in_use() -> bool:
    try:
        return bool(
            set(os.listdir("/proc/sys/fs/binfmt_misc")) - {"register", "status"}
        )
    except OSError:
        return False


def check_file(path: str) -> int:
    """0 if exec() would run ``path``, else the errno it would fail with."""
    if not os.path.exists(path):
        return errno.ENOENT
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return errno.EACCES
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return 0  # executable but unreadable: exec may still run it
    if magic[:2] == b"#!" or magic == b"\x7fELF" or _binfmt_misc_in_use():
        return 0
    # exec() refuses it; execvp (which setpriv uses) would run it with /bin/sh.
    return errno.ENOEXEC


def check_runnable(argv0: str) -> None:
    """Fail as exec would, before setpriv stands between us and the exec."""
    if os.sep in argv0:
        error = check_file(argv0)
    else:
        # execvp's search: the first runnable entry wins; EACCES if some
        # entry existed but could not run, else ENOENT.
        error = errno.ENOENT
        for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
            found = check_file(os.path.join(folder or ".", argv0))
            if found == 0:
                return
            if found != errno.ENOENT:
                error = found
    if error:
        raise OSError(error, os.strerror(error))
