"""The hook on paramiko's packet read loop: for proxies whose end recv() cannot see.

``Packetizer.read_all`` calls ``_check_keepalive`` each time its socket's
``recv`` times out (ten times a second on an idle connection). An idle tick
should cost what upstream's does, so the look is put on the Packetizer of a
ProxyCommand itself, and only when needed: at once for a proxy the spawner
thread does not watch (no spawner under gevent or eventlet: then every
CHECK_EVERY-th tick looks; or one the fix did not start), else once the
spawner thread, which looks at every live proxy each second
(``registry.look_all``), has seen it ended. The look asks whether the proxy
ended although its output did not (a process it started still holds the
pipe), and ends the loop:

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
import weakref
from typing import Any, Callable

from paramiko.proxy import ProxyCommand

from . import spawn
from ._patch import is_built_in as built_in
from .child import RUNNING
from .errors import ProxyCommandExited
from .extras import extras_of
from .logs import log

__all__ = ["CHECK_EVERY", "make_packetizer_init"]

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


def _looker(
    ref: weakref.ReferenceType[Any], own_recv: Callable[[Any], bool]
) -> Callable[[], None]:
    """What a Packetizer's ``_check_keepalive`` becomes, on the instance (it
    holds no strong reference: no cycle keeps a dropped connection alive)."""

    def _check_keepalive() -> None:
        packetizer = ref()
        if packetizer is None:
            return
        try:
            _look(packetizer._Packetizer__socket, own_recv)
        except EOFError:
            raise  # ProxyCommandExited is one too
        except Exception:
            log.debug("exit check of a proxy failed", exc_info=True)
        type(packetizer)._check_keepalive(packetizer)

    return _check_keepalive


def _look(sock: Any, own_recv: Callable[[Any], bool]) -> None:
    extras = extras_of(sock)
    if extras is not None and not spawn.watching:
        # No spawner thread looks (green threads): every CHECK_EVERY-th.
        extras.ticks += 1
        if extras.ticks < CHECK_EVERY:
            return
        extras.ticks = 0
        extras.io.idle(time.monotonic())
    elif extras is not None and extras.child.state is RUNNING:
        return
    check_ended(sock, own_recv(sock))


def _attach(packetizer: Any, sock: Any, own_recv: Callable[[Any], bool]) -> None:
    ref = weakref.ref(packetizer)
    look = _looker(ref, own_recv)

    def arm() -> None:
        live = ref()
        if live is not None:
            live.__dict__["_check_keepalive"] = look

    extras = extras_of(sock)
    if extras is None or not spawn.watching:
        arm()  # looks on its idle ticks from the start
    else:
        extras.arm = arm  # once the spawner thread sees the proxy ended


def make_packetizer_init(
    original: Callable[..., None], uses_fixed_recv: Callable[[Any], bool]
) -> Callable[..., None]:
    """Wrap upstream's ``Packetizer.__init__`` (saved by the caller)."""

    def __init__(self: Any, socket: Any, *args: Any, **kwargs: Any) -> None:
        original(self, socket, *args, **kwargs)
        if isinstance(socket, ProxyCommand):
            try:
                _attach(self, socket, uses_fixed_recv)
            except Exception:  # a connection without the look, never none
                log.debug("attaching the exit check failed", exc_info=True)

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    __init__.__doc__ = original.__doc__
    return __init__
