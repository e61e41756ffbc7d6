"""The methods install() puts on paramiko's ProxyCommand; the instances they manage.

They keep upstream's public attributes (``cmd``, ``process``, ``timeout``), so
code that reads them still works, and keep everything else in a
ProxyProcess on the instance (``proxy_process_of()``). An instance the fix
did not create is adopted only when it is understood: a Popen-backed
ProxyCommand whose class keeps our ``send`` and ``recv``. Anything else
(a subclass with its own I/O, one without ``.process``) gets upstream's
methods, untouched.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any, Callable

from .process import ProxyProcess, split_command, track

__all__ = ["PROCESS_ATTR", "FixedProxyCommand", "UPSTREAM", "proxy_process_of"]

#: Where a ProxyCommand keeps its ProxyProcess.
PROCESS_ATTR = "_proxyfix_process"
#: Upstream's methods by name, filled by install(): for the instances the fix
#: leaves alone.
UPSTREAM: dict[str, Callable[..., Any]] = {}

_adopt_lock = threading.Lock()


def _fresh_lock_in_child() -> None:
    # Another parent thread may have held it at fork.
    global _adopt_lock
    _adopt_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_in_child)


def proxy_process_of(proxy: Any) -> ProxyProcess | None:
    """The ProxyProcess of a ProxyCommand; adopts one started before install.

    None for an instance the fix does not understand.
    """
    state: ProxyProcess | None = proxy.__dict__.get(PROCESS_ATTR)
    if state is not None:
        return state
    cls = type(proxy)
    process = proxy.__dict__.get("process")
    if (
        not isinstance(process, subprocess.Popen)
        or getattr(cls, "send", None) is not _SEND
        or getattr(cls, "recv", None) is not _RECV
        or process.stdout is None
        or process.stdin is None
    ):
        return None
    with _adopt_lock:
        state = proxy.__dict__.get(PROCESS_ATTR)
        if state is None:
            try:
                own_group = os.getpgid(process.pid) == process.pid
            except OSError:
                own_group = False
            state = ProxyProcess(list(proxy.cmd), process, own_group)
            proxy.__dict__[PROCESS_ATTR] = state
            track(proxy, state)
    return state


def _upstream(name: str, proxy: Any, *args: Any) -> Any:
    original = UPSTREAM.get(name)
    if original is None:
        raise TypeError(
            f"{type(proxy).__name__} was not started by paramiko_proxyfix and "
            f"has no upstream {name}() to fall back to"
        )
    return original(proxy, *args)


class FixedProxyCommand:
    """The methods install() puts on ``paramiko.proxy.ProxyCommand``."""

    def __init__(self, command_line: str) -> None:
        argv = split_command(command_line)
        self.cmd = argv
        self.timeout: float | None = None
        # A subclass with its own send or recv keeps that pipe blocking, as
        # its code expects, until it calls ours.
        cls = type(self)
        state = ProxyProcess.start(
            argv,
            own_stdout=getattr(cls, "recv", None) is _RECV,
            own_stdin=getattr(cls, "send", None) is _SEND,
        )
        self.process = state.process
        self.__dict__[PROCESS_ATTR] = state
        track(self, state)

    def send(self, content: bytes) -> int:
        state = proxy_process_of(self)
        if state is None:
            return _upstream("send", self, content)  # type: ignore[no-any-return]
        return state.send(content, self.timeout)

    def recv(self, size: int) -> bytes:
        state = proxy_process_of(self)
        if state is None:
            return _upstream("recv", self, size)  # type: ignore[no-any-return]
        return state.recv(size, self.timeout)

    def close(self) -> None:
        state = proxy_process_of(self)
        if state is None:
            _upstream("close", self)
        else:
            state.close()

    @property
    def closed(self) -> bool:
        state = proxy_process_of(self)
        if state is None:
            return self.process.returncode is not None
        return state.closed

    @property
    def _closed(self) -> bool:
        return self.closed

    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("Timeout value out of range")
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout


_SEND = vars(FixedProxyCommand)["send"]
_RECV = vars(FixedProxyCommand)["recv"]
#: The methods a live instance keeps after uninstall() (see _patch.py).
PINNED = ("send", "recv", "close", "settimeout", "gettimeout")
