"""An in-process paramiko SSH server with a few scripted commands.

Faster and more controllable than sshd: tests can ask for exact byte
streams (``blob``), checksums (``sha256``), long commands (``sleep``) and
exit codes. It is the package's loopback server (accept loop, login, stop)
with the tests' commands: any public key, or its password, for any user.

Commands: ``echo X...``, ``cat``, ``sleep N``, ``exit N``, ``blob N SEED``,
``sha256``.  Anything else exits 127 with a message on stderr.
"""

from __future__ import annotations

import hashlib
import shlex
import threading
import time
from typing import Any

import paramiko

from tests.support.loopback import loopback

_HOST_KEY: paramiko.ECDSAKey | None = None


def host_key() -> paramiko.ECDSAKey:
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


class FakeServer(loopback.LoopbackServer):
    """Threaded SSH server on 127.0.0.1; ``stop()`` joins every thread."""

    backlog = 64
    auth_methods = "publickey,password"

    def __init__(self) -> None:
        self.commands: list[str] = []  # every exec request, in order
        super().__init__(host_key())

    def run_command(self, channel: paramiko.Channel, command: str) -> int:
        self.commands.append(command)
        # Let the transport thread send the exec "success" reply first: a
        # close arriving before it makes the client raise "Channel closed".
        time.sleep(0.02)
        argv = shlex.split(command)
        name, args = (argv[0], argv[1:]) if argv else ("", [])
        if name == "echo":
            channel.sendall((" ".join(args) + "\n").encode())
        elif name == "cat":
            while chunk := channel.recv(65536):
                channel.sendall(chunk)
        elif name == "sleep":
            self._stopping.wait(float(args[0]))
        elif name == "exit":
            return int(args[0])
        elif name == "blob":
            channel.sendall(blob_bytes(int(args[0]), args[1]))
        elif name == "sha256":
            digest = hashlib.sha256()
            while chunk := channel.recv(65536):
                digest.update(chunk)
            channel.sendall((digest.hexdigest() + "\n").encode())
        else:
            message = f"fakeserver: unknown command {name!r}\n"
            channel.sendall_stderr(message.encode())
            return 127
        return 0

    def connect(
        self, sock: Any = None, timeout: float = 15.0, **options: Any
    ) -> paramiko.SSHClient:
        """An SSHClient logged in with the password, through ``sock`` if given.

        Our host key is pre-trusted and anything else rejected; ``options``
        (``username=...``) go to ``SSHClient.connect``.
        """
        return super().connect(sock, timeout, **options)

    def stop(self, timeout: float = 10.0) -> list[threading.Thread]:
        """Close every connection and join every thread it started."""
        alive = super().stop(timeout)
        if alive:
            raise RuntimeError(f"fake server threads still alive: {alive}")
        return alive
