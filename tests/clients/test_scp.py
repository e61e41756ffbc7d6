"""scp: SCPClient on a transport through ``ssh -W``, proxy killed.

After the kill the next ``put``/``get`` must fail at once (the transport is
no longer active), the SSHClient's ``close()`` must leave nothing behind,
and a new connection copies again, as a retrying caller would do.
"""

from __future__ import annotations

import pytest

from tests.celery_app.support import scenario_report
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(90)


def scenario() -> None:
    """Runs in the capped child (tests.clients.test_scp:scenario)."""
    import os
    import tempfile
    from pathlib import Path

    import paramiko
    from scp import SCPClient

    import paramiko_proxyfix  # noqa: F401  -- the fix, as a user's app does
    from tests.celery_app.support import ssh_client
    from tests.clients import support

    workdir = tempfile.TemporaryDirectory(prefix="proxyfix-scp-")
    here = Path(workdir.name)
    blob = os.urandom(1 << 20)
    (here / "blob").write_bytes(blob)

    def round_trip(client: paramiko.SSHClient, name: str) -> bool:
        with SCPClient(client.get_transport(), socket_timeout=10) as scp:
            scp.put(str(here / "blob"), str(here / f"{name}.remote"))
            scp.get(str(here / f"{name}.remote"), str(here / f"{name}.back"))
        return (here / f"{name}.back").read_bytes() == blob

    pipes_before = support.pipes()
    client = ssh_client()  # SSHClient.connect(sock=paramiko.ProxyCommand(...))
    first = round_trip(client, "first")
    transport = client.get_transport()
    support.kill_when_idle(transport.sock.process.pid)
    detect = support.seconds_until(lambda: not transport.is_active())
    cpu = support.cpu_after_kill()
    after, after_took = support.timed(lambda: round_trip(client, "after"))
    client.close()
    client = ssh_client()
    again = round_trip(client, "again")
    client.close()
    workdir.cleanup()
    support.emit(
        first=first,
        detect=detect,
        cpu=cpu,
        after=after,
        after_took=after_took,
        again=again,
        **support.leaks(pipes_before),
    )


def test_copy_fails_at_once_and_a_new_connection_copies(sshd: Sshd) -> None:
    data = scenario_report(sshd, "tests.clients.test_scp:scenario", True, cap=60)
    print("scp, fixed:", data)
    assert data["first"] is True
    assert data["detect"] is not None and data["detect"] < 1.0, data
    assert data["cpu"] < 0.05, data
    assert data["after"] == "error: SSHException: SSH session not active", data
    assert data["after_took"] < 1.0, data
    assert data["again"] is True
    assert data["zombies"] == 0 and data["pipes_leaked"] == 0, data
    assert data["proxies_left"] == 0, data
