"""An SSH server on 127.0.0.1, inside this process, for the demo and check.

It needs nothing but paramiko, so ``demo`` and ``check`` work on any host
with the package installed. It imports nothing from ``paramiko_proxyfix``
either: the patch tests, and the test suite's own servers built on it, load it
by path to exercise a paramiko that the package did not patch.
Commands: ``wait`` (runs until the client leaves), ``echo WORDS``, ``cat``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import socket
import sys
import threading
import time
from typing import Any, Callable, TypeVar, Union

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

PASSWORD = "loopback"
#: This file, run by path with ``python RELAY HOST PORT`` as the proxy.
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.py")

_Listener = TypeVar("_Listener", bound="LoopbackListener")
# What stop() closes: accepted sockets, or the transports running over them.
_Closable = Union[socket.socket, paramiko.Transport]


def relay_command(host: str, port: int) -> str:
    """A ProxyCommand line that relays to host:port, the way ``ssh -W`` does."""
    return " ".join(shlex.quote(a) for a in (sys.executable, RELAY, host, str(port)))


def connect(
    host: str,
    port: int,
    host_key: str,
    sock: Any,
    timeout: float = 10.0,
    **options: Any,
) -> paramiko.SSHClient:
    """Log in to a LoopbackServer through ``sock``, trusting only ``host_key``.

    ``host_key`` is the server key's base64 form, so another process can
    connect to a server it did not start. ``options`` override the
    ``SSHClient.connect`` arguments (agent and ~/.ssh keys off by default).
    """
    key = paramiko.ECDSAKey(data=base64.b64decode(host_key))
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[{host}]:{port}", key.get_name(), key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    arguments: dict[str, Any] = {
        "username": "demo",
        "password": PASSWORD,
        "allow_agent": False,
        "look_for_keys": False,
        "timeout": timeout,
        "banner_timeout": timeout,
        "auth_timeout": timeout,
        **options,
    }
    try:
        client.connect(host, port, sock=sock, **arguments)
    except BaseException:
        client.close()
        raise
    return client


class LoopbackListener:
    """Serves each TCP connection to a free loopback port in a thread of its own.

    The accept loop and the stop that ends every thread, shared by the SSH
    server below and the test suite's servers: subclasses define ``_serve``.
    """

    host = "127.0.0.1"
    backlog = 16

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(self.backlog)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._open: list[_Closable] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., object], *args: object) -> None:
        name = f"{type(self).__name__}:{self.port} {target.__name__}"
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._start(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        """Handle one accepted connection, in its own thread."""
        raise NotImplementedError

    def _track(self, resource: _Closable) -> bool:
        """Have stop() close ``resource``; False (and closed now) if it has begun."""
        with self._lock:
            self._open.append(resource)
        if self._stopping.is_set():
            resource.close()
            return False
        return True

    def stop(self, timeout: float = 2.0) -> list[threading.Thread]:
        """Close the listener and every connection; wait for our threads.

        Returns the threads still alive after ``timeout`` seconds.
        """
        self._stopping.set()
        self._listener.close()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                resources = list(self._open)
                threads = [t for t in self._threads if t.is_alive()]
            for resource in resources:
                resource.close()
            # Transport.close() may return before its thread has ended.
            threads += [
                r for r in resources if isinstance(r, threading.Thread) and r.is_alive()
            ]
            if not threads or time.monotonic() >= deadline:
                return threads
            threads[0].join(0.1)

    def __enter__(self: _Listener) -> _Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return self.server.auth_methods

    def check_auth_password(self, username: str, password: str) -> int:
        if password == PASSWORD:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if "publickey" in self.server.auth_methods.split(","):
            return AUTH_SUCCESSFUL  # any key: the tests' server allows that
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(
        self, channel: paramiko.Channel, command: bytes
    ) -> bool:
        self.server._start(self.server._exec, channel, command.decode())
        return True


class LoopbackServer(LoopbackListener):
    """Accepts SSH connections on a free loopback port until ``stop()``.

    Logs in with ``PASSWORD`` as any user. Subclasses may widen
    ``auth_methods`` and run other commands by overriding ``run_command``.
    """

    auth_methods = "password"

    def __init__(self, key: paramiko.ECDSAKey | None = None) -> None:
        self.key = paramiko.ECDSAKey.generate() if key is None else key
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        if not self._track(transport):
            return
        transport.add_server_key(self.key)
        try:
            transport.start_server(server=_Interface(self))
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()
            return
        channels = []  # a Channel that is garbage-collected closes itself
        while transport.is_active() and not self._stopping.is_set():
            channel = transport.accept(0.1)  # served from exec requests
            if channel is not None:
                channels.append(channel)
        transport.close()

    def _exec(self, channel: paramiko.Channel, command: str) -> None:
        try:
            status = self.run_command(channel, command)
        except (OSError, EOFError, paramiko.SSHException):
            status = 255  # the client went away: what the demo is about
        if status is None:
            return
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.send_exit_status(status)
            channel.shutdown_write()
            channel.close()

    def run_command(self, channel: paramiko.Channel, command: str) -> int | None:
        """Run one exec request: its exit status, or None if the client left."""
        argv = shlex.split(command) or [""]
        if argv[0] == "wait":
            while not channel.closed and not self._stopping.wait(0.1):
                if not channel.get_transport().is_active():
                    return None
        elif argv[0] == "echo":
            channel.sendall((" ".join(argv[1:]) + "\n").encode())
        elif argv[0] == "cat":
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                channel.sendall(data)
        else:
            channel.sendall_stderr(f"unknown command: {argv[0]}\n".encode())
            return 127
        return 0

    def connect(
        self, sock: Any = None, timeout: float = 10.0, **options: Any
    ) -> paramiko.SSHClient:
        """A client logged in through ``sock``, trusting only our host key."""
        return connect(
            self.host, self.port, self.key.get_base64(), sock, timeout, **options
        )
