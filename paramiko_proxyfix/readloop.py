"""The hook on paramiko's packet read loop: for proxies whose end recv() cannot see.

``Packetizer.read_all`` calls ``_check_keepalive`` each time its socket's
``recv`` times out (ten times a second on an idle connection). The spawner
thread looks at every live proxy once a second (``registry.look_all``); once
it has seen one ended (or on every CHECK_EVERY-th call where no spawner
thread looks, under gevent or eventlet), the replacement asks whether the
proxy ended although its output did not (a process it started still holds
the pipe), and ends the loop:

- a proxy that failed (non-zero status, or killed) ends the connection with
  its ``ProxyCommandExited``; one that exited 0 does not, because a launcher
  such as ``setsid`` hands its pipes to its child;
- a ProxyCommand whose recv is not the fix's (a subclass with upstream's
  spinning one, or an instance made before install()): EOF once its proxy
  ended and nothing is left to read.

It never raises anything else.
"""

from __future__ import annotations

import select
import time
from typing import Any, Callable

from paramiko.proxy import ProxyCommand

from . import spawn
from ._patch import is_built_in as built_in
from .child import RUNNING
from .errors import ProxyCommandExited
from .extras import ATTR, extras_of
from .logs import log

__all__ = ["CHECK_EVERY", "make_check_keepalive"]

#: Idle ticks (0.1 s each) between two looks at one proxy's status.
CHECK_EVERY = 10
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
        # An idle connection comes here ten times a second: while the spawner
        # thread looks at every proxy each second (spawn.py), a running one
        # costs a look at its state, nothing more.
        try:
            extras = self._Packetizer__socket.__dict__[ATTR]
        except (AttributeError, KeyError):
            extras = None
        if extras is not None and extras.child.state is RUNNING and spawn.watching:
            original(self)
            return
        sock = getattr(self, "_Packetizer__socket", None)
        if isinstance(sock, ProxyCommand):
            if extras is not None and spawn.watching is False:
                # No spawner thread looks (green threads): every CHECK_EVERY-th.
                extras.ticks += 1
                if extras.ticks < CHECK_EVERY:
                    original(self)
                    return
                extras.ticks = 0
                extras.io.idle(time.monotonic())
            try:
                check_ended(sock, uses_fixed_recv(sock))
            except EOFError:
                raise  # ProxyCommandExited is one too
            except Exception:
                log.debug("exit check of a proxy failed", exc_info=True)
        original(self)

    _check_keepalive.__wrapped__ = original  # type: ignore[attr-defined]
    return _check_keepalive
