"""Hardening of paramiko's packet read loop.

``Packetizer.read_all`` calls ``_check_keepalive`` each time its socket's
``recv`` times out. For a ProxyCommand subclass that overrides ``recv`` (with
upstream's spinning one, say), the replacement first asks whether the proxy
process has ended with nothing left to read, and ends the loop with EOF. The
fixed ``recv`` makes that check itself, so it is skipped for it: an idle
connection times out ten times a second.
"""

from __future__ import annotations

from typing import Any, Callable

from paramiko.proxy import ProxyCommand

from .errors import ProxyCommandExited
from .proxy import state_of

__all__ = ["make_check_keepalive"]


def make_check_keepalive(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap upstream's ``Packetizer._check_keepalive`` (saved by the caller)."""

    def _check_keepalive(self: Any) -> None:
        sock = getattr(self, "_Packetizer__socket", None)
        if isinstance(sock, ProxyCommand) and type(sock).recv is not ProxyCommand.recv:
            state = state_of(sock)
            code = state.exit_status()
            if code is not None and not state.pending_output():
                if code == 0:
                    raise EOFError()
                raise ProxyCommandExited(state.command, code, state.stderr_tail())
        original(self)

    _check_keepalive.__wrapped__ = original  # type: ignore[attr-defined]
    return _check_keepalive
