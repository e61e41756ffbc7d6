"""Exceptions raised by the fixed ProxyCommand.

They subclass paramiko's ``ProxyCommandFailure`` so that existing ``except``
clauses keep working, and paramiko's banner reader passes them to the caller
of ``connect()`` unchanged.
"""

from __future__ import annotations

import errno
import signal

from paramiko.ssh_exception import ProxyCommandFailure

__all__ = [
    "ProxyCommandClosed",
    "ProxyCommandExited",
    "ProxyCommandForeign",
    "ProxyCommandStartError",
]


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "closed its output but is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


class ProxyCommandExited(ProxyCommandFailure, EOFError):
    """The proxy process ended: its exit status and the tail of its stderr.

    It is also an ``EOFError``, so code that treats a closed stream as EOF
    (paramiko's packetizer, callers of ``recv``) ends the same way.
    """

    def __init__(
        self, command: str, returncode: int | None, stderr_tail: str = ""
    ) -> None:
        self.returncode = returncode
        self.signal_name: str | None = None
        if returncode is not None and returncode < 0:
            try:
                self.signal_name = signal.Signals(-returncode).name
            except ValueError:
                self.signal_name = f"signal {-returncode}"
        # ssh writes CRLF line ends to stderr; keep messages to plain lines
        self.stderr_tail = stderr_tail.replace("\r\n", "\n")
        error = _describe(returncode)
        if self.stderr_tail.strip():
            error += f"; stderr: {self.stderr_tail.strip()}"
        super().__init__(command, error)

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}) {self.error}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.command, self.returncode, self.stderr_tail))


class ProxyCommandClosed(ProxyCommandFailure, BrokenPipeError):
    """A write after this ProxyCommand was closed by its owner.

    It is also a ``BrokenPipeError`` (errno EPIPE), as a write to a closed
    socket would be: paramiko's packet writer then ends the transport thread
    quietly with EOF instead of logging a routine close() as an error.
    """

    def __init__(self, command: str, error: str = "the proxy was closed") -> None:
        super().__init__(command, error)
        self.errno = errno.EPIPE
        self.strerror = error

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}): {self.error}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.command, self.error))


class ProxyCommandStartError(ProxyCommandFailure):
    """The proxy command could not be started: empty, not found, not runnable."""

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}) could not start: {self.error}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.command, self.error))


class ProxyCommandForeign(ProxyCommandFailure):
    """This ProxyCommand belongs to another process (it was inherited by fork).

    Its pipes are shared with the owner; reading or writing them here would
    corrupt the owner's SSH stream, so the forked copy refuses to.
    """

    def __init__(self, command: str, owner_pid: int) -> None:
        self.owner_pid = owner_pid
        super().__init__(
            command,
            f"belongs to process {owner_pid}; it was inherited by fork and "
            "cannot be used here. Open a new connection in this process.",
        )

    def __str__(self) -> str:
        return f"ProxyCommand({self.command!r}) {self.error}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.command, self.owner_pid))
