"""A real OpenSSH server on loopback, so proxies can be tested with ``ssh -W``.

The same sshd is both bastion and target: ``proxy_command()`` asks it to
forward to itself.  Client host-key checking stays on (known_hosts written
here, paramiko uses RejectPolicy) so a test never passes by accident against
the wrong server.
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko

from tests.support import capped

SSHD_BIN = "/usr/sbin/sshd"
SSH_BIN = "/usr/bin/ssh"
SSH_KEYGEN_BIN = "/usr/bin/ssh-keygen"
MISSING_HINT = (
    "OpenSSH server not found at /usr/sbin/sshd: run `bash .ci/run` (or "
    "`bash tests/run`), or `apt-get install openssh-server openssh-client`."
)


class SshdError(RuntimeError):
    """sshd could not be started; carries its stderr."""


def free_port() -> int:
    """A loopback port that was free a moment ago (sshd may still race us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        [SSH_KEYGEN_BIN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )


class Sshd:
    """An sshd on 127.0.0.1 with its own host key, client key and known_hosts.

    Use as a context manager or call ``start()`` / ``stop()``. ``options``
    add or replace sshd_config keywords (the benchmark raises the limits).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path | None = None,
        options: Mapping[str, str] | None = None,
        prefix: str = "proxyfix-sshd-",
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.options = dict(options or {})
        self.username = pwd.getpwuid(os.getuid()).pw_name
        self.port = 0
        self.host_key_path = workdir / "ssh_host_ed25519_key"
        self.client_key_path = workdir / "id_ed25519"
        self.known_hosts_path = workdir / "known_hosts"
        self.config_path = workdir / "sshd_config"
        self.log_path = workdir / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Sshd:
        """Start sshd and wait until it sends its banner."""
        if not os.path.exists(SSHD_BIN):
            raise SshdError(MISSING_HINT)
        if os.getuid() == 0:  # privilege separation needs it when run as root
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        _keygen(self.host_key_path, "proxyfix-test-host")
        _keygen(self.client_key_path, "proxyfix-test-client")
        authorized = self.workdir / "authorized_keys"
        authorized.write_bytes(self.client_key_path.with_suffix(".pub").read_bytes())
        errors = []
        for _ in range(3):  # the port can be taken between probe and bind
            self.port = free_port()
            self._write_config(authorized)
            try:
                self._launch(timeout)
            except SshdError as exc:
                errors.append(str(exc))
                continue
            host_pub = self.host_key_path.with_suffix(".pub").read_text().split()
            self.known_hosts_path.write_text(
                f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n"
            )
            return self
        raise SshdError("sshd did not start:\n" + "\n---\n".join(errors))

    def _write_config(self, authorized: Path) -> None:
        config = {
            "Port": str(self.port),
            "ListenAddress": self.host,
            "HostKey": str(self.host_key_path),
            "AuthorizedKeysFile": str(authorized),
            "PidFile": "none",
            "UsePAM": "no",
            "StrictModes": "no",
            "PermitRootLogin": "prohibit-password",
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "AllowTcpForwarding": "yes",
            "X11Forwarding": "no",
            "PrintMotd": "no",
            "LogLevel": "VERBOSE",
            # tests open many connections quickly; don't throttle them
            "MaxStartups": "200",
            "MaxSessions": "200",
            "ClientAliveInterval": "0",
            **self.options,
        }
        text = "".join(f"{key} {value}\n" for key, value in config.items())
        self.config_path.write_text(text)

    def _launch(self, timeout: float) -> None:
        # a file, not a pipe: sshd never blocks on logging
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD_BIN, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        capped.register_service_pid(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._banner_ok():
                return
            time.sleep(0.05)
        self._terminate()
        raise SshdError(
            f"sshd on port {self.port} not ready after {timeout}s "
            f"(exit={self.process.returncode}); its stderr:\n{self.log()}"
        )

    def _banner_ok(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the listener and every session process it forked."""
        self._terminate()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _terminate(self) -> None:
        proc = self.process
        if proc is None:
            return
        # per-connection children call setsid(), so a process-group kill
        # would miss them: collect the tree first.
        tree = capped.descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        capped.kill_pids(tree)
        capped.unregister_service_pid(proc.pid)
        self.process = None

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        """sshd's stderr so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- clients -----------------------------------------------------------

    def proxy_argv(
        self, target_host: str = "127.0.0.1", target_port: int | None = None
    ) -> list[str]:
        """argv of a real ``ssh -W`` through this sshd (default target: itself)."""
        port = self.port if target_port is None else target_port
        return [
            SSH_BIN,
            "-W",
            f"{target_host}:{port}",
            "-p",
            str(self.port),
            "-i",
            str(self.client_key_path),
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-F",
            "/dev/null",
            f"{self.username}@{self.host}",
        ]

    def proxy_command(
        self, target_host: str = "127.0.0.1", target_port: int | None = None
    ) -> str:
        """The same, as the one string that ``ProxyCommand`` splits."""
        return shlex.join(self.proxy_argv(target_host, target_port))

    def login_env(self, prefix: str, proxy_name: str = "PROXY") -> dict[str, str]:
        """What a child process needs to log in here through ``ssh -W``.

        As environment variables ``{prefix}HOST``, ``PORT``, ``USER``, ``KEY``,
        ``KNOWN_HOSTS`` and ``{prefix}{proxy_name}`` (the ``ssh -W`` command).
        """
        values = {
            "HOST": self.host,
            "PORT": str(self.port),
            "USER": self.username,
            "KEY": str(self.client_key_path),
            "KNOWN_HOSTS": str(self.known_hosts_path),
            proxy_name: self.proxy_command(),
        }
        return {prefix + name: value for name, value in values.items()}

    def client_key(self) -> paramiko.PKey:
        """The client key as a paramiko key object."""
        return paramiko.Ed25519Key(filename=str(self.client_key_path))

    def connect(
        self, sock: Any = None, timeout: float = 15.0, **kwargs: Any
    ) -> paramiko.SSHClient:
        """An SSHClient logged in to this sshd, through ``sock`` if given.

        Host keys come from our known_hosts and unknown keys are rejected.
        Agent and ~/.ssh keys are disabled so only our client key is used.
        """
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        options: dict[str, Any] = {
            "username": self.username,
            "pkey": self.client_key(),
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
