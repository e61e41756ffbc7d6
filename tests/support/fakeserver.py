"""An in-process paramiko SSH server with a few scripted commands.

Faster and more controllable than sshd: tests can ask for exact byte
streams (``blob``), checksums (``sha256``), long commands (``sleep``) and
exit codes.  Accepts any public key, and password "pw" for any user.

Commands: ``echo X...``, ``cat``, ``sleep N``, ``exit N``, ``blob N SEED``,
``sha256``.  Anything else exits 127 with a message on stderr.
"""

from __future__ import annotations

import hashlib
import shlex
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

PASSWORD = "pw"
_HOST_KEY: paramiko.PKey | None = None


def host_key() -> paramiko.PKey:
    """One ECDSA host key per process (generation is the slow part)."""
    global _HOST_KEY
    if _HOST_KEY is None:
        _HOST_KEY = paramiko.ECDSAKey.generate()
    return _HOST_KEY


def blob_bytes(size: int, seed: str) -> bytes:
    """The bytes ``blob SIZE SEED`` sends: sha256(seed:counter) blocks."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_password(self, username: str, password: str) -> int:
        if password == PASSWORD:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(
        self, channel: paramiko.Channel, command: bytes
    ) -> bool:
        self.server._spawn(self.server._run_command, channel, command.decode())
        return True


class FakeServer:
    """Threaded SSH server on 127.0.0.1; ``stop()`` joins every thread."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._transports: list[paramiko.Transport] = []
        self.commands: list[str] = []  # every exec request, in order
        self._spawn(self._accept_loop)

    def _spawn(self, target: Callable[..., object], *args: object) -> None:
        name = f"proxyfix-test-fakeserver:{self.port} {target.__name__}"
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        with self._lock:
            self._transports.append(transport)
        if self._stopping.is_set():
            transport.close()
            return
        transport.add_server_key(host_key())
        try:
            transport.start_server(server=_Interface(self))
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()
            return
        channels = []  # keep references: a collected Channel closes itself
        while transport.is_active() and not self._stopping.is_set():
            chan = transport.accept(0.1)  # served from exec requests
            if chan is not None:
                channels.append(chan)

    def _run_command(self, chan: paramiko.Channel, command: str) -> None:
        self.commands.append(command)
        # Let the transport thread send the exec "success" reply first: a
        # close arriving before it makes the client raise "Channel closed".
        time.sleep(0.02)
        status = 0
        try:
            status = self._execute(chan, shlex.split(command))
        except (OSError, EOFError, paramiko.SSHException):
            status = 255
        finally:
            try:
                chan.send_exit_status(status)
                chan.shutdown_write()
                chan.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass

    def _execute(self, chan: paramiko.Channel, argv: list[str]) -> int:
        name, args = (argv[0], argv[1:]) if argv else ("", [])
        if name == "echo":
            chan.sendall((" ".join(args) + "\n").encode())
        elif name == "cat":
            while chunk := chan.recv(65536):
                chan.sendall(chunk)
        elif name == "sleep":
            self._stopping.wait(float(args[0]))
        elif name == "exit":
            return int(args[0])
        elif name == "blob":
            chan.sendall(blob_bytes(int(args[0]), args[1]))
        elif name == "sha256":
            digest = hashlib.sha256()
            while chunk := chan.recv(65536):
                digest.update(chunk)
            chan.sendall((digest.hexdigest() + "\n").encode())
        else:
            chan.sendall_stderr(f"fakeserver: unknown command {name!r}\n".encode())
            return 127
        return 0

    def connect(
        self,
        sock: Any = None,
        username: str = "tester",
        timeout: float = 15.0,
        **kwargs: Any,
    ) -> paramiko.SSHClient:
        """An SSHClient logged in with the password, through ``sock`` if given.

        Our host key is pre-trusted and anything else rejected.
        """
        client = paramiko.SSHClient()
        key = host_key()
        client.get_host_keys().add(f"[{self.host}]:{self.port}", key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        options: dict[str, Any] = {
            "username": username,
            "password": PASSWORD,
            "allow_agent": False,
            "look_for_keys": False,
            "timeout": timeout,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
        }
        options.update(kwargs)
        try:
            client.connect(self.host, self.port, sock=sock, **options)
        except BaseException:
            client.close()
            raise
        return client

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and join every thread it started."""
        self._stopping.set()
        self._listener.close()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                transports = list(self._transports)
                threads = [t for t in self._threads if t.is_alive()]
            # Transport.close() may return before its thread has ended
            threads += [t for t in transports if t.is_alive()]
            for transport in transports:
                transport.close()
            if not threads:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake server threads still alive: {threads}")
            threads[0].join(0.1)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
