"""The exceptions a fixed ProxyCommand raises.

``ProxyCommandExited`` and ``ProxyCommandClosed`` are the fix's own (see
``upstream/ssh_exception.py``): on a paramiko built from ``patches/`` they are
paramiko's classes, so both spellings name one class, and install() puts
ours into ``paramiko.ssh_exception`` under the same names. Either way pickles
and Celery's JSON results name ``paramiko.ssh_exception``, and a process
of a mixed fleet rebuilds them whichever kind it is.

The start errors are this package's: its spawner stands between paramiko and
the exec, and raises what ``Popen`` would have (``FileNotFoundError``,
``PermissionError``, ``OSError``), naming the command. All subclass
paramiko's ``ProxyCommandFailure``, and their ``args`` are their
constructor's, so pickle and Celery's JSON result backend rebuild them.
"""

from __future__ import annotations

import errno
import os

from paramiko import ssh_exception
from paramiko.ssh_exception import ProxyCommandFailure, SSHException

from .upstream import ssh_exception as _ours

__all__ = [
    "ProxyCommandClosed",
    "ProxyCommandExited",
    "ProxyCommandForeign",
    "ProxyCommandNotFound",
    "ProxyCommandNotPermitted",
    "ProxyCommandStartError",
]

# A paramiko built from patches/ has them; before install() nothing else puts
# them there.
_home = ssh_exception if hasattr(ssh_exception, "ProxyCommandExited") else _ours
ProxyCommandExited: type[_ours.ProxyCommandExited] = _home.ProxyCommandExited
ProxyCommandClosed: type[_ours.ProxyCommandClosed] = _home.ProxyCommandClosed
#: What 0.2 raised on a ProxyCommand inherited by fork; now that is a closed one.
ProxyCommandForeign = ProxyCommandClosed


class ProxyCommandStartError(ProxyCommandFailure, OSError):
    """The proxy command could not be started: empty, not found, not runnable.

    An ``OSError`` with ``errno`` set where the system gave one, as upstream's
    ``Popen`` failure was; a missing binary raises the ``FileNotFoundError``
    subclass, a non-executable one the ``PermissionError`` subclass.
    """

    def __init__(
        self,
        command: str,
        error: str,
        errno: int | None = None,
        filename: str | None = None,
    ) -> None:
        SSHException.__init__(self, command, error, errno, filename)
        self.command = command
        self.error = error
        # OSError's own constructor read our arguments as (errno, strerror,
        # filename): set its fields to what they mean here.
        self.errno = errno
        self.strerror = error
        self.filename = filename
        self.args = (command, error, errno, filename)

    def __str__(self) -> str:
        return f'ProxyCommand("{self.command}") could not start: {self.error}'

    @staticmethod
    def for_errno(command: str, number: int, what: str) -> ProxyCommandStartError:
        """The subclass that matches ``number``, as ``OSError(number)`` would be."""
        error = f"{os.strerror(number)}: {what!r}"
        if number == errno.ENOENT:
            return ProxyCommandNotFound(command, error, number, what)
        if number in (errno.EACCES, errno.EPERM):
            return ProxyCommandNotPermitted(command, error, number, what)
        return ProxyCommandStartError(command, error, number, what)


class ProxyCommandNotFound(ProxyCommandStartError, FileNotFoundError):
    """The proxy command does not exist (upstream raised FileNotFoundError)."""


class ProxyCommandNotPermitted(ProxyCommandStartError, PermissionError):
    """The proxy command cannot be run (upstream raised PermissionError)."""
