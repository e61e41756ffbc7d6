"""Fast end-to-end checks: an in-process SSH server and the test proxies.

The real-parts versions (OpenSSH, ``ssh -W``) are in test_sshd.py; these run
in a second or two and cover proxies that misbehave in ways ssh does not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import time
from collections.abc import Iterator

import paramiko
import pytest

import paramiko_proxyfix
from tests.support import capped, proxy_cmd, stderr_tail
from tests.support.fakeserver import FakeServer, blob_bytes

pytestmark = pytest.mark.timeout(60)


def wait_inactive(transport: paramiko.Transport, cap: float = 5.0) -> float:
    t0 = time.monotonic()
    while transport.is_active():
        assert time.monotonic() - t0 < cap, "transport still active"
        time.sleep(0.001)
    return time.monotonic() - t0


def test_relay_carries_exact_bytes_both_ways(fake_server: FakeServer) -> None:
    sock = paramiko.ProxyCommand(proxy_cmd("relay", fake_server.host, fake_server.port))
    client = fake_server.connect(sock=sock)
    try:
        _, stdout, _ = client.exec_command("blob 3000000 s1")
        assert (
            hashlib.sha256(stdout.read()).digest()
            == hashlib.sha256(blob_bytes(3000000, "s1")).digest()
        )
        stdin, stdout, _ = client.exec_command("sha256")
        payload = blob_bytes(2000000, "up")
        stdin.write(payload)
        stdin.channel.shutdown_write()
        assert stdout.read().strip().decode() == hashlib.sha256(payload).hexdigest()
    finally:
        client.close()
    assert capped.proc_state(sock.process.pid) is None


def test_relay_dying_mid_transfer_raises_with_its_status(
    fake_server: FakeServer,
) -> None:
    sock = paramiko.ProxyCommand(
        proxy_cmd(
            "relay",
            fake_server.host,
            fake_server.port,
            "--die-after-bytes",
            200000,
            "--exit-status",
            42,
            "--stderr",
            "relay gave up",
        )
    )
    client = fake_server.connect(sock=sock)
    try:
        _, stdout, _ = client.exec_command("blob 10000000 s2")
        assert len(stdout.read()) < 10000000  # the channel ends early, no hang
        transport = client.get_transport()
        wait_inactive(transport)
        exc = transport.get_exception()
        assert isinstance(exc, paramiko_proxyfix.ProxyCommandExited), repr(exc)
        assert exc.returncode == 42 and "relay gave up" in exc.stderr_tail
    finally:
        client.close()


def test_proxy_that_closes_stdout_but_lives_on() -> None:
    sock = paramiko.ProxyCommand(proxy_cmd("close_stdout_live", "--seconds", 60))
    pid = sock.process.pid
    transport = paramiko.Transport(sock)
    t0 = time.monotonic()
    with pytest.raises(paramiko.SSHException):
        transport.start_client(timeout=10)
    # EOF once the proxy has started (~0.3 s on a busy machine), not the 10 s
    # banner timeout
    assert time.monotonic() - t0 < 5
    transport.close()
    assert capped.proc_state(pid) is None  # killed and reaped although alive


def test_proxy_ignoring_sigterm_is_killed_on_close(fake_server: FakeServer) -> None:
    sock = paramiko.ProxyCommand(
        proxy_cmd("ignore_term", fake_server.host, fake_server.port)
    )
    client = fake_server.connect(sock=sock)
    t0 = time.monotonic()
    client.close()
    took = time.monotonic() - t0
    assert sock.process.returncode == -signal.SIGKILL
    assert took < paramiko_proxyfix.config.current().close_timeout + 0.5
    assert capped.proc_state(sock.process.pid) is None


def test_processes_the_proxy_started_die_with_it(fake_server: FakeServer) -> None:
    sock = paramiko.ProxyCommand(
        proxy_cmd("with_child", fake_server.host, fake_server.port)
    )
    client = fake_server.connect(sock=sock)
    deadline = time.monotonic() + 5
    while "child-pid=" not in stderr_tail(sock) and time.monotonic() < deadline:
        client.exec_command("echo x")[1].read()  # keeps recv, and so stderr, draining
    child = int(re.search(r"child-pid=(\d+)", stderr_tail(sock)).group(1))
    assert capped.proc_state(child) not in (None, "Z")
    client.close()
    assert capped.wait_gone([child], 2) == []


def test_stderr_flood_before_relaying_does_not_block(fake_server: FakeServer) -> None:
    sock = paramiko.ProxyCommand(
        proxy_cmd(
            "stderr_flood", fake_server.host, fake_server.port, "--bytes", 4 << 20
        )
    )
    client = fake_server.connect(sock=sock, timeout=20)
    try:
        _, stdout, _ = client.exec_command("echo through")
        assert stdout.read() == b"through\n"
        assert len(stderr_tail(sock)) <= paramiko_proxyfix.config.current().stderr_tail
    finally:
        client.close()


def test_grandchild_holding_the_pipe_does_not_keep_the_transport(
    fake_server: FakeServer,
) -> None:
    sock = paramiko.ProxyCommand(
        proxy_cmd("grandchild_holds_pipe", fake_server.host, fake_server.port)
    )
    client = fake_server.connect(sock=sock)
    transport = client.get_transport()
    try:
        os.kill(sock.process.pid, signal.SIGKILL)
        # The read loop looks at the proxy once a second: 10x that.
        assert wait_inactive(transport, cap=12.0) < 11
    finally:
        client.close()
    tail = stderr_tail(sock)
    grandchild = re.search(r"grandchild-pid=(\d+)", tail)
    if grandchild:  # it stayed in the proxy's process group: close() got it
        assert capped.wait_gone([int(grandchild.group(1))], 2) == []


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[_Records]:
    """Every record of paramiko and of the fix, whatever the app configured."""
    handler = _Records()
    loggers = [logging.getLogger("paramiko"), logging.getLogger("paramiko_proxyfix")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_a_killed_proxy_is_one_warning_not_an_error(
    fake_server: FakeServer, records: _Records
) -> None:
    """paramiko's transport thread would log the proxy's end at ERROR with a
    traceback: it ends quietly, the fix logs one WARNING line, and callers
    still get the rich ProxyCommandExited."""
    sock = paramiko.ProxyCommand(proxy_cmd("relay", fake_server.host, fake_server.port))
    client = fake_server.connect(sock=sock)
    transport = client.get_transport()
    try:
        os.kill(sock.process.pid, signal.SIGKILL)
        wait_inactive(transport)
        exc = transport.get_exception()
        assert isinstance(exc, paramiko_proxyfix.ProxyCommandExited)
        assert exc.signal_name == "SIGKILL"
        with pytest.raises(paramiko.SSHException):
            client.exec_command("echo x")
    finally:
        client.close()
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    warnings = [r for r in records.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "paramiko_proxyfix"
    line = warnings[0].getMessage()
    assert str(sock.process.pid) in line and "SIGKILL" in line and "relay" in line


def test_a_proxy_closed_by_us_logs_nothing_above_debug(
    fake_server: FakeServer, records: _Records
) -> None:
    """The transport thread may still write when close() runs: that is no
    error either. 20 rounds, as the race is hit about one time in two."""
    for _ in range(20):
        sock = paramiko.ProxyCommand(
            proxy_cmd("relay", fake_server.host, fake_server.port)
        )
        client = fake_server.connect(sock=sock)
        client.exec_command("echo x")[1].read()
        sock.close()
        message = paramiko.Message()
        message.add_byte(bytes([paramiko.common.MSG_IGNORE]))
        message.add_string(b"late")
        with pytest.raises(paramiko_proxyfix.ProxyCommandClosed):
            client.get_transport().packetizer.send_message(message)
        client.close()
    loud = [r for r in records.records if r.levelno > logging.DEBUG]
    loud = [
        r
        for r in loud
        if r.name.startswith("paramiko_proxyfix") or r.levelno >= logging.WARNING
    ]
    assert loud == [], [r.getMessage() for r in loud]
