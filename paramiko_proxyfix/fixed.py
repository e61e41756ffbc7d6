"""The methods install() puts on paramiko's ``ProxyCommand`` class.

They keep upstream's public attributes (``cmd``, ``process``, ``timeout``), so
code that reads them still works, and keep everything else in a ProxyProcess
on the instance. tools/make_patches.py makes them ProxyCommand's own methods
in a patched paramiko.
"""

from __future__ import annotations

import weakref

from .proxy import STATE_ATTR, ProxyProcess, split_command, state_of

__all__ = ["FixedProxyCommand"]


class FixedProxyCommand:
    """The methods install() puts on ``paramiko.proxy.ProxyCommand``."""

    def __init__(self, command_line: str) -> None:
        argv = split_command(command_line)
        self.cmd = argv
        self.timeout: float | None = None
        state = ProxyProcess.start(argv)
        self.process = state.process
        self.__dict__[STATE_ATTR] = state
        weakref.finalize(self, state.finalize)

    def send(self, content: bytes) -> int:
        return state_of(self).send(content, self.timeout)

    def recv(self, size: int) -> bytes:
        return state_of(self).recv(size, self.timeout)

    def close(self) -> None:
        state_of(self).close()

    @property
    def closed(self) -> bool:
        return state_of(self).closed

    @property
    def _closed(self) -> bool:
        return state_of(self).closed

    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("Timeout value out of range")
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout
