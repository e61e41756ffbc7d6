"""netmiko: ConnectHandler through an ssh_config ProxyCommand, proxy killed.

netmiko builds ``paramiko.ProxyCommand`` itself from the ``ProxyCommand``
line of ``ssh_config_file``. After the kill the handler must report itself
dead, its next ``send_command`` must fail at once, ``disconnect()`` must
leave nothing behind, and a new handler (netmiko's way to reconnect) works.
"""

from __future__ import annotations

import pytest

from tests.celery_app.support import scenario_report
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(90)


def scenario() -> None:
    """Runs in the capped child (tests.clients.test_netmiko:scenario)."""
    import os
    import tempfile
    from pathlib import Path

    from netmiko import BaseConnection, ConnectHandler

    import paramiko_proxyfix  # noqa: F401  -- the fix, as a user's app does
    from tests.clients import support

    env = os.environ
    workdir = tempfile.TemporaryDirectory(prefix="proxyfix-netmiko-")
    config = Path(workdir.name) / "ssh_config"
    config.write_text(
        "Host target\n"
        f"    HostName {env['PFX_HOST']}\n"
        f"    Port {env['PFX_PORT']}\n"
        f"    ProxyCommand {env['PFX_GATEWAY']}\n"
    )

    def connect() -> BaseConnection:
        return ConnectHandler(
            device_type="linux",
            host="target",
            username=env["PFX_USER"],
            use_keys=True,
            key_file=env["PFX_KEY"],
            allow_agent=False,
            ssh_strict=True,  # RejectPolicy: only the sshd of known_hosts
            system_host_keys=False,
            alt_host_keys=True,
            alt_key_file=env["PFX_KNOWN_HOSTS"],
            ssh_config_file=str(config),
            conn_timeout=10,
        )

    pipes_before = support.pipes()
    conn = connect()
    first = conn.send_command("echo first-$((20+22))").strip()
    transport = conn.remote_conn.transport
    support.kill_when_idle(transport.sock.process.pid)
    detect = support.seconds_until(lambda: not transport.is_active())
    cpu = support.cpu_after_kill()
    alive, alive_took = support.timed(conn.is_alive)
    after, after_took = support.timed(lambda: conn.send_command("echo after"))
    conn.disconnect()
    again_conn = connect()
    again = again_conn.send_command("echo again").strip()
    again_conn.disconnect()
    workdir.cleanup()
    support.emit(
        first=first,
        detect=detect,
        cpu=cpu,
        alive_after_kill=alive,
        alive_took=alive_took,
        after=after,
        after_took=after_took,
        again=again,
        **support.leaks(pipes_before),
    )


def test_handler_fails_at_once_and_a_new_one_works(sshd: Sshd) -> None:
    data = scenario_report(sshd, "tests.clients.test_netmiko:scenario", True, cap=60)
    print("netmiko, fixed:", data)
    assert data["first"] == "first-42"
    assert data["detect"] is not None and data["detect"] < 1.0, data
    assert data["cpu"] < 0.05, data
    assert data["alive_after_kill"] == "False", data
    assert data["after"].startswith("error: "), data
    assert data["after_took"] < 2.0, data
    assert data["again"] == "again"
    assert data["zombies"] == 0 and data["pipes_leaked"] == 0, data
    assert data["proxies_left"] == 0, data
