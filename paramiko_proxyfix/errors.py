"""Exceptions raised by the fixed ProxyCommand.

They subclass paramiko's ``ProxyCommandFailure``, so existing ``except``
clauses keep working and paramiko's banner reader hands them to the caller of
``connect()`` unchanged. Their ``args`` are their constructor's arguments, so
pickle and Celery's JSON result backend rebuild them as they were.
"""

from __future__ import annotations

import errno
import os
import signal

from paramiko.ssh_exception import ProxyCommandFailure, SSHException

__all__ = [  # in the order they are defined
    "signal_name",
    "describe_status",
    "ProxyCommandExited",
    "ProxyCommandClosed",
    "ProxyCommandStartError",
    "ProxyCommandNotFound",
    "ProxyCommandNotPermitted",
    "ProxyCommandForeign",
]


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal 77`` for a number with no name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_status(returncode: int | None) -> str:
    """How a proxy ended, from its status (negative: the signal; None: unknown)."""
    if returncode is None:
        return "ended; its exit status was collected by another part of this process"
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)}"
    return f"exited with status {returncode}"


def _init(exc: ProxyCommandFailure, command: str, error: str, *args: object) -> None:
    # args as the constructor took them; command and error as paramiko has them
    SSHException.__init__(exc, command, *args)
    exc.command = command
    exc.error = error


class ProxyCommandExited(ProxyCommandFailure, EOFError):
    """The proxy process ended: its exit status and the tail of its stderr.

    ``returncode`` is negative for a signal and None when another part of the
    process (a SIGCHLD handler, ``SIGCHLD=SIG_IGN``, an event loop's child
    watcher) collected the status first. It is also an ``EOFError``: code
    that treats a closed stream as EOF ends the same way.
    """

    def __init__(
        self, command: str, returncode: int | None, stderr_tail: str = ""
    ) -> None:
        self.returncode = returncode
        self.signal_name = (
            signal_name(-returncode)
            if returncode is not None and returncode < 0
            else None
        )
        self.stderr_tail = stderr_tail
        error = describe_status(returncode)
        # ssh writes CRLF line ends to stderr; keep messages to plain lines
        shown = stderr_tail.replace("\r\n", "\n").strip()
        if shown:
            error += f"; stderr: {shown}"
        _init(self, command, error, returncode, stderr_tail)

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}) {self.error}"


class ProxyCommandClosed(ProxyCommandFailure):
    """The ProxyCommand was used after its owner closed it.

    An SSHException, as upstream's failure on a closed proxy was: code that
    reuses a ProxyCommand for a new connection (sshtunnel's ``restart()``)
    gets an error it knows.
    """

    def __init__(self, command: str, error: str = "the proxy was closed") -> None:
        _init(self, command, error, error)

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}): {self.error}"


class ProxyCommandStartError(ProxyCommandFailure, OSError):
    """The proxy command could not be started: empty, not found, not runnable.

    An ``OSError`` with ``errno`` set where the system gave one, as upstream's
    ``Popen`` failure was; a missing binary raises the ``FileNotFoundError``
    subclass, a non-executable one the ``PermissionError`` subclass.
    """

    def __init__(self, command: str, error: str, errno: int | None = None) -> None:
        _init(self, command, error, error, errno)
        # OSError's own constructor read our arguments as (errno, strerror,
        # filename): set its fields to what they mean here.
        self.errno = errno
        self.strerror = error
        self.filename = None
        self.args = (command, error, errno)

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}) could not start: {self.error}"

    @staticmethod
    def for_errno(command: str, number: int, what: str) -> ProxyCommandStartError:
        """The subclass that matches ``number``, as ``OSError(number)`` would be."""
        error = f"{os.strerror(number)}: {what!r}"
        if number == errno.ENOENT:
            return ProxyCommandNotFound(command, error, number)
        if number in (errno.EACCES, errno.EPERM):
            return ProxyCommandNotPermitted(command, error, number)
        return ProxyCommandStartError(command, error, number)


class ProxyCommandNotFound(ProxyCommandStartError, FileNotFoundError):
    """The proxy command does not exist (upstream raised FileNotFoundError)."""


class ProxyCommandNotPermitted(ProxyCommandStartError, PermissionError):
    """The proxy command cannot be run (upstream raised PermissionError)."""


class ProxyCommandForeign(ProxyCommandFailure):
    """This ProxyCommand belongs to another process (it was inherited by fork).

    Its pipes are shared with the owner; reading or writing them here would
    corrupt the owner's SSH stream, so the forked copy refuses to.
    """

    def __init__(self, command: str, owner_pid: int) -> None:
        self.owner_pid = owner_pid
        error = (
            f"belongs to process {owner_pid}; it was inherited by fork and "
            "cannot be used here. Open a new connection in this process."
        )
        _init(self, command, error, owner_pid)

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}) {self.error}"
