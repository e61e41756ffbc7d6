"""The hook on paramiko's packet read loop, for ProxyCommands that read on their own.

``Packetizer.read_all`` calls ``_check_keepalive`` each time its socket's
``recv`` times out. For a ProxyCommand the fix started whose class overrides
``recv`` (with upstream's spinning one, say), the replacement first asks
whether the proxy has ended with nothing left to read, and ends the loop. The
fixed ``recv`` makes that check itself, and instances the fix does not manage
are left alone: the hook never raises anything else.
"""

from __future__ import annotations

from typing import Any, Callable

from paramiko.proxy import ProxyCommand

from .fixed import PROCESS_ATTR, FixedProxyCommand
from .logs import log

__all__ = ["make_check_keepalive"]

_RECV = vars(FixedProxyCommand)["recv"]


def make_check_keepalive(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap upstream's ``Packetizer._check_keepalive`` (saved by the caller)."""

    def _check_keepalive(self: Any) -> None:
        sock = getattr(self, "_Packetizer__socket", None)
        if isinstance(sock, ProxyCommand) and type(sock).recv is not _RECV:
            state = getattr(sock, "__dict__", {}).get(PROCESS_ATTR)
            if state is not None:
                try:
                    state.check_ended()
                except EOFError:
                    raise  # ProxyCommandExited is one too
                except Exception:
                    log.debug("exit check of proxy %d failed", state.pid, exc_info=True)
        original(self)

    _check_keepalive.__wrapped__ = original  # type: ignore[attr-defined]
    return _check_keepalive
