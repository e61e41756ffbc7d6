"""The hook on paramiko's packet read loop: for proxies whose end recv() cannot see.

``Packetizer.read_all`` calls ``_check_keepalive`` each time its socket's
``recv`` times out (ten times a second on an idle connection). For a
ProxyCommand there, at most every CHECK_EVERY seconds, the replacement asks
whether the proxy ended although its output did not (a process it started
still holds the pipe), and ends the loop:

- a proxy that failed (non-zero status, or killed) ends the connection with
  its ``ProxyCommandExited``; one that exited 0 does not, because a launcher
  such as ``setsid`` hands its pipes to its child;
- a ProxyCommand whose recv is not the fix's (a subclass with upstream's
  spinning one, or an instance made before install()): EOF once its proxy
  ended and nothing is left to read.

It also lets a grown pipe of an idle proxy shrink back. It never raises
anything else.
"""

from __future__ import annotations

import select
import time
from typing import Any, Callable

from paramiko.proxy import ProxyCommand

from ._patch import is_built_in as built_in
from .errors import ProxyCommandExited
from .extras import ATTR, extras_of
from .logs import log

__all__ = ["CHECK_EVERY", "make_check_keepalive"]

#: Seconds between two looks at one proxy's status (a waitid() costs more the
#: more children and threads a process has).
CHECK_EVERY = 1.0
_POLLHUP = getattr(select, "POLLHUP", 16)


def _writers_gone(fd: int) -> bool:
    probe = getattr(select, "poll", None)
    if probe is None:
        return True  # cannot tell: take the exit as the end
    p = probe()
    p.register(fd, select.POLLIN)
    return any(ev & _POLLHUP for _, ev in p.poll(0))


def check_ended(sock: Any, own_recv: bool) -> None:
    """Raise EOFError (or ProxyCommandExited) if ``sock``'s proxy has ended in
    a way its recv() does not report."""
    extras = extras_of(sock)
    if extras is not None:
        code = extras.child.poll()
    else:
        process = getattr(sock, "process", None)
        code = process.poll() if process is not None else None
    if code is None:
        return
    if own_recv and (
        code == 0 or (extras is not None and not extras.child.status_known)
    ):
        return  # a launcher's child has the connection now
    if code == 0:
        # Another recv: EOF once no process holds the pipe's other end.
        if not _writers_gone(sock.process.stdout.fileno()):
            return
        raise EOFError()
    if extras is not None or built_in():  # made by the fix: its own error
        sock._on_ended(code)
        raise sock._exit_error(code)
    raise ProxyCommandExited(" ".join(sock.cmd), code, "")


def make_check_keepalive(
    original: Callable[[Any], None], uses_fixed_recv: Callable[[Any], bool]
) -> Callable[[Any], None]:
    """Wrap upstream's ``Packetizer._check_keepalive`` (saved by the caller)."""

    def _check_keepalive(self: Any) -> None:
        sock = getattr(self, "_Packetizer__socket", None)
        if isinstance(sock, ProxyCommand):
            # An idle connection comes here ten times a second: look at the
            # proxy at most every CHECK_EVERY seconds.
            extras = sock.__dict__.get(ATTR)
            now = time.monotonic()
            if extras is None or now >= extras.next_check:
                if extras is not None:
                    extras.next_check = now + CHECK_EVERY
                    extras.io.idle(now)
                try:
                    check_ended(sock, uses_fixed_recv(sock))
                except EOFError:
                    raise  # ProxyCommandExited is one too
                except Exception:
                    log.debug("exit check of a proxy failed", exc_info=True)
        original(self)

    _check_keepalive.__wrapped__ = original  # type: ignore[attr-defined]
    return _check_keepalive
