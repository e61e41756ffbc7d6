"""A throwaway OpenSSH sshd on 127.0.0.1 for the benchmark.

Its own host key, client key and known_hosts in a temporary directory; SFTP
through ``internal-sftp``; limits raised so a thousand connections at once are
the client's problem, not sshd's. The same sshd is bastion and target: ``ssh
-W`` asks it to forward to itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )


def _tree(pid: int) -> list[int]:
    """Descendants of ``pid`` from /proc (sshd's children call setsid)."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            parents[int(name)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        cur = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == cur]
        found += kids
        frontier += kids
    return found


class Sshd:
    """Start with ``with Sshd() as sshd:``; everything lives in ``workdir``."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="proxyfix-bench-")
        self.workdir = Path(self._tmp.name)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = 0
        self.host_key = self.workdir / "host_key"
        self.client_key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sshd:
        if not os.path.exists(SSHD):
            raise SystemExit(f"{SSHD} is missing: apt-get install openssh-server")
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        _keygen(self.host_key)
        _keygen(self.client_key)
        authorized = self.workdir / "authorized_keys"
        authorized.write_bytes(self.client_key.with_suffix(".pub").read_bytes())
        for _ in range(3):  # the probed port can be taken before sshd binds it
            self.port = _free_port()
            if self._launch(authorized):
                kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
                self.known_hosts.write_text(f"[{self.host}]:{self.port} {kind} {key}\n")
                return self
        self.stop()
        raise SystemExit("sshd did not start: " + self.log())

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _launch(self, authorized: Path) -> bool:
        config = self.workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    "PidFile none",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "AllowTcpForwarding yes",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "UseDNS no",
                    "LogLevel ERROR",
                    "Subsystem sftp internal-sftp",
                    # A thousand proxied connections arrive close together.
                    "MaxStartups 4000",
                    "MaxSessions 50",
                    "ClientAliveInterval 0",
                ]
            )
            + "\n"
        )
        with open(self.workdir / "sshd.log", "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), 1) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                time.sleep(0.05)
        self._terminate()
        return False

    def _terminate(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        tree = _tree(proc.pid)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pid in tree:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self._terminate()
        self._tmp.cleanup()

    def log(self) -> str:
        try:
            return (self.workdir / "sshd.log").read_text(errors="replace")
        except OSError:
            return ""

    def sshw_argv(self) -> list[str]:
        """A real ``ssh -W`` through this sshd back to itself."""
        return [
            SSH,
            "-W",
            f"{self.host}:{self.port}",
            "-p",
            str(self.port),
            "-i",
            str(self.client_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-F",
            "/dev/null",
            f"{self.user}@{self.host}",
        ]

    def sshw_command(self) -> str:
        return shlex.join(self.sshw_argv())
