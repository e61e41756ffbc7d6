"""sshtunnel: SSHTunnelForwarder with ``ssh_proxy=paramiko.ProxyCommand(...)``.

A local port is forwarded to a TCP echo server on 127.0.0.1, bytes go
through, then the proxy of the idle tunnel is SIGKILLed. The forwarder must
see its transport end at once, a new client connection through the tunnel
must be closed at once, ``restart()`` with the spent ProxyCommand must fail
the way sshtunnel reports a gateway it cannot reach, and ``stop()`` must
leave nothing behind. A fresh ProxyCommand then brings the tunnel back.
"""

from __future__ import annotations

import pytest

from tests.celery_app.support import scenario_report
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(90)


def scenario() -> None:
    """Runs in the capped child (tests.clients.test_sshtunnel:scenario)."""
    import os
    import socket

    import paramiko
    from sshtunnel import SSHTunnelForwarder

    import paramiko_proxyfix  # noqa: F401  -- the fix, as a user's app does
    from tests.clients import support
    from tests.support.echo import EchoServer

    env = os.environ
    host, port = env["PFX_HOST"], int(env["PFX_PORT"])
    known = paramiko.HostKeys(env["PFX_KNOWN_HOSTS"]).lookup(f"[{host}]:{port}")
    assert known is not None

    def echo(local_port: int, payload: bytes) -> bytes:
        # No half-close: sshtunnel ends the forward on the client's EOF.
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload) and (chunk := s.recv(65536)):
                got += chunk
            return got

    echo_server = EchoServer()
    pipes_before = support.pipes()
    tunnel = SSHTunnelForwarder(
        (host, port),
        ssh_username=env["PFX_USER"],
        ssh_pkey=env["PFX_KEY"],
        ssh_host_key=known["ssh-ed25519"],  # sshtunnel checks no host key itself
        ssh_proxy=paramiko.ProxyCommand(env["PFX_GATEWAY"]),
        ssh_config_file=None,
        allow_agent=False,
        host_pkey_directories=[],
        remote_bind_address=("127.0.0.1", echo_server.port),
        local_bind_address=("127.0.0.1", 0),
    )
    tunnel.start()
    payload = os.urandom(256 << 10)
    first = echo(tunnel.local_bind_port, payload) == payload
    local_port = tunnel.local_bind_port  # refused by sshtunnel once inactive
    support.kill_when_idle(tunnel.ssh_proxy.process.pid)
    detect = support.seconds_until(lambda: not tunnel.is_active)
    cpu = support.cpu_after_kill()
    after, after_took = support.timed(lambda: echo(local_port, b"x"))
    restart, restart_took = support.timed(tunnel.restart)
    # sshtunnel's way back: a new ProxyCommand for the next start()
    tunnel.stop()
    tunnel.ssh_proxy = paramiko.ProxyCommand(env["PFX_GATEWAY"])
    tunnel.start()
    again = echo(tunnel.local_bind_port, payload) == payload
    tunnel.stop()
    echo_server.stop()
    support.emit(
        first=first,
        detect=detect,
        cpu=cpu,
        after=after,
        after_took=after_took,
        restart=restart,
        restart_took=restart_took,
        again=again,
        **support.leaks(pipes_before),
    )


@pytest.fixture(scope="module")
def report(sshd: Sshd) -> dict:
    data = scenario_report(sshd, "tests.clients.test_sshtunnel:scenario", True, cap=60)
    print("sshtunnel, fixed:", data)
    return data


def test_tunnel_ends_at_once_and_comes_back_with_a_new_proxy(report: dict) -> None:
    data = report
    assert data["first"] is True
    assert data["detect"] is not None and data["detect"] < 1.0, data
    assert data["cpu"] < 0.05, data
    # the forward handler cannot open a channel: the client sees EOF at once
    assert data["after"] == "b''", data
    assert data["after_took"] < 2.0, data
    assert data["again"] is True
    assert data["zombies"] == 0 and data["pipes_leaked"] == 0, data
    assert data["proxies_left"] == 0, data


def test_restart_with_the_spent_proxy_fails_as_sshtunnel_reports_it(
    report: dict,
) -> None:
    """restart() reuses the ProxyCommand, closed with its transport.

    Upstream's send raised ProxyCommandFailure (an SSHException), which
    sshtunnel catches and reports as "Could not establish session to SSH
    gateway". The same must hold with the fix: a bare EOFError escapes
    sshtunnel's handling.
    """
    assert report["restart_took"] < 5.0, report
    assert report["restart"] == (
        "error: BaseSSHTunnelForwarderError: Could not establish session to SSH gateway"
    ), report
