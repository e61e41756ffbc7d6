"""The tests' throwaway OpenSSH sshd on 127.0.0.1, set up for the benchmark.

Its own host key, client key and known_hosts in a temporary directory (see
tests/support/sshd.py); SFTP through ``internal-sftp``; limits raised so a
thousand connections at once are the client's problem, not sshd's. The same
sshd is bastion and target: ``ssh -W`` asks it to forward to itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run.py runs by path: only benchmarks/ is on it
    sys.path.insert(1, str(ROOT))

from tests.support import sshd as test_sshd  # noqa: E402

OPTIONS = {
    "PrintLastLog": "no",
    "UseDNS": "no",
    "LogLevel": "ERROR",
    "Subsystem": "sftp internal-sftp",
    # A thousand proxied connections arrive close together.
    "MaxStartups": "4000",
    "MaxSessions": "50",
}


class Sshd:
    """Start with ``with Sshd() as sshd:``; everything lives in ``workdir``.

    The names are the ones run.py and the child configuration use.
    """

    host = test_sshd.Sshd.host

    def __init__(self) -> None:
        self._sshd = test_sshd.Sshd(options=OPTIONS, prefix="proxyfix-bench-")
        self.workdir = self._sshd.workdir
        self.user = self._sshd.username
        self.client_key = self._sshd.client_key_path
        self.known_hosts = self._sshd.known_hosts_path

    @property
    def port(self) -> int:
        return self._sshd.port

    def __enter__(self) -> Sshd:
        try:
            self._sshd.start()
        except test_sshd.SshdError as exc:
            self._sshd.stop()
            raise SystemExit(str(exc)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._sshd.stop()

    def sshw_command(self) -> str:
        """A real ``ssh -W`` through this sshd back to itself."""
        return self._sshd.proxy_command()
