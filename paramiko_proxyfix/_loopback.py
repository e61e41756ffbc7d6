"""An SSH server on 127.0.0.1, inside this process, for the demo and check.

It needs nothing but paramiko, so ``demo`` and ``check`` work on any host
with the package installed. It imports nothing from ``paramiko_proxyfix``
either: the patch tests load it by path to exercise a patched paramiko alone.
Commands: ``wait`` (runs until the client leaves), ``echo WORDS``, ``cat``.
"""

from __future__ import annotations

import base64
import os
import shlex
import socket
import sys
import threading
from typing import Any

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

PASSWORD = "loopback"
#: This file, run by path with ``python RELAY HOST PORT`` as the proxy.
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_relay.py")


def relay_command(host: str, port: int) -> str:
    """A ProxyCommand line that relays to host:port, the way ``ssh -W`` does."""
    return " ".join(shlex.quote(a) for a in (sys.executable, RELAY, host, str(port)))


def connect(
    host: str, port: int, host_key: str, sock: Any, timeout: float = 10.0
) -> paramiko.SSHClient:
    """Log in to a LoopbackServer through ``sock``, trusting only ``host_key``.

    ``host_key`` is the server key's base64 form, so another process can
    connect to a server it did not start.
    """
    key = paramiko.ECDSAKey(data=base64.b64decode(host_key))
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[{host}]:{port}", key.get_name(), key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host,
            port,
            username="demo",
            password=PASSWORD,
            sock=sock,
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except BaseException:
        client.close()
        raise
    return client


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        if password == PASSWORD:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
        self.server._start(self.server._execute, channel, command.decode())
        return True


class LoopbackServer:
    """Accepts SSH connections on a free loopback port until ``stop()``."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.key = paramiko.ECDSAKey.generate()
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._transports: list[paramiko.Transport] = []
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> None:
        name = f"paramiko_proxyfix loopback:{self.port} {target.__name__}"
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
        transport = paramiko.Transport(conn)
        with self._lock:
            self._transports.append(transport)
        transport.add_server_key(self.key)
        try:
            transport.start_server(server=_Interface(self))
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()
            return
        channels = []  # a Channel that is garbage-collected closes itself
        while transport.is_active() and not self._stopping.is_set():
            channel = transport.accept(0.1)
            if channel is not None:
                channels.append(channel)
        transport.close()

    def _execute(self, channel: Any, command: str) -> None:
        argv = shlex.split(command) or [""]
        status = 0
        try:
            if argv[0] == "wait":
                while not channel.closed and not self._stopping.wait(0.1):
                    if not channel.get_transport().is_active():
                        return
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
                status = 127
            channel.send_exit_status(status)
            channel.shutdown_write()
            channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away: what the demo is about

    def connect(self, sock: Any, timeout: float = 10.0) -> paramiko.SSHClient:
        """A client logged in through ``sock``, trusting only our host key."""
        return connect(self.host, self.port, self.key.get_base64(), sock, timeout)

    def stop(self) -> None:
        """Close the listener and every connection; join our threads briefly."""
        self._stopping.set()
        self._listener.close()
        with self._lock:
            transports = list(self._transports)
            threads = list(self._threads)
        for transport in transports:
            transport.close()
        for thread in threads:
            thread.join(2.0)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
