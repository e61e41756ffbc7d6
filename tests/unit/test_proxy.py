"""The fix itself, fast: a ProxyCommand on ``cat``, ``sh`` and a tiny Python child.

recv/send, the timeout, end of file, the exit status and stderr, close() and
what the registry counts. Few and quick: the system tests cover the fix in
depth, through a real sshd and ``ssh -W``.
"""

from __future__ import annotations

import gc
import logging
import os
import shlex
import signal
import socket
import sys
import time
from typing import Callable

import pytest
from paramiko.proxy import ProxyCommand
from paramiko.ssh_exception import ProxyCommandFailure

import paramiko_proxyfix
from paramiko_proxyfix import ProxyCommandClosed, ProxyCommandExited, procfs
from paramiko_proxyfix.extras import extras_of
from tests.support import wait_until
from tests.unit.procs import PATIENCE

pytestmark = pytest.mark.timeout(30)

OpenProxy = Callable[[str], ProxyCommand]


def recv_exactly(proxy: ProxyCommand, size: int) -> bytes:
    out = b""
    while len(out) < size:
        data = proxy.recv(size - len(out))
        assert data, f"end of output after {out!r}"
        out += data
    return out


def gone(pid: int) -> bool:
    return procfs.stat(pid) is None


def test_cat_echoes_what_is_sent(open_proxy: OpenProxy) -> None:
    proxy = open_proxy("cat")
    assert proxy.send(b"hello") == 5
    assert recv_exactly(proxy, 5) == b"hello"
    assert proxy.send(b"x" * 100000) > 0  # what the pipe took: maybe not all
    assert not proxy.closed


def test_close_ends_and_reaps_the_proxy(open_proxy: OpenProxy) -> None:
    proxy = open_proxy("cat")
    pid = proxy.process.pid
    proxy.close()
    assert proxy.closed
    assert proxy.process.returncode is not None
    assert gone(pid)  # reaped: no zombie
    proxy.close()  # repeatable
    assert proxy.recv(1) == b""  # a reader sees the end, as when closed meanwhile
    with pytest.raises(ProxyCommandClosed) as caught:
        proxy.send(b"x")
    assert str(caught.value) == 'ProxyCommand("cat") was closed'


def test_recv_times_out(open_proxy: OpenProxy) -> None:
    proxy = open_proxy("cat")
    proxy.settimeout(0.05)
    assert proxy.timeout == 0.05
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        proxy.recv(1)
    assert 0.05 <= time.monotonic() - started < 2.05
    # still usable after a timeout, as a socket is
    proxy.settimeout(PATIENCE)
    proxy.send(b"k")
    assert recv_exactly(proxy, 1) == b"k"


def test_end_of_output_with_status_zero_is_eof(open_proxy: OpenProxy) -> None:
    proxy = open_proxy("printf data")
    assert recv_exactly(proxy, 4) == b"data"
    assert proxy.recv(10) == b""
    assert proxy.recv(10) == b""
    assert proxy.closed  # it ended


def test_end_of_output_with_a_status_raises_it_with_stderr(
    open_proxy: OpenProxy,
) -> None:
    proxy = open_proxy(
        "sh -c 'printf out; echo warming up >&2; echo refused >&2; exit 3'"
    )
    assert recv_exactly(proxy, 3) == b"out"
    with pytest.raises(ProxyCommandExited) as caught:
        proxy.recv(10)
    error = caught.value
    assert isinstance(error, EOFError)
    assert error.returncode == 3 and error.signal_name is None
    assert error.stderr_tail == "warming up\nrefused\n"
    assert error.command == " ".join(proxy.cmd)
    assert str(error).endswith("exited with status 3; stderr: warming up\nrefused")


def test_a_proxy_killed_by_a_signal(open_proxy: OpenProxy) -> None:
    proxy = open_proxy("sh -c 'kill -KILL $$'")
    with pytest.raises(ProxyCommandExited) as caught:
        proxy.recv(10)
    assert caught.value.returncode == -signal.SIGKILL
    assert caught.value.signal_name == "SIGKILL"


def test_a_tiny_python_proxy(open_proxy: OpenProxy) -> None:
    code = (
        "import sys\n"
        "data = sys.stdin.buffer.read(5)\n"
        "sys.stdout.buffer.write(data[::-1]); sys.stdout.flush()\n"
        "sys.stderr.write('bye'); sys.exit(7)\n"
    )
    proxy = open_proxy(shlex.join([sys.executable, "-c", code]))
    assert proxy.send(b"hello") == 5
    assert recv_exactly(proxy, 5) == b"olleh"
    with pytest.raises(ProxyCommandExited) as caught:
        proxy.recv(10)
    assert (caught.value.returncode, caught.value.stderr_tail) == (7, "bye")


def test_send_to_a_proxy_that_ended_says_how_it_ended(open_proxy: OpenProxy) -> None:
    proxy = open_proxy("sh -c 'echo gone >&2; exit 5'")
    assert paramiko_proxyfix.is_installed()
    assert wait_until(lambda: proxy._wait(0) is not None, PATIENCE)
    with pytest.raises(ProxyCommandExited) as caught:
        proxy.send(b"x" * 10)
    assert isinstance(caught.value, ProxyCommandFailure)
    assert (caught.value.returncode, caught.value.stderr_tail) == (5, "gone\n")


def test_close_kills_a_proxy_that_ignores_sigterm(open_proxy: OpenProxy) -> None:
    before = paramiko_proxyfix.stats()
    proxy = open_proxy("sh -c 'trap \"\" TERM; echo ready; exec sleep 30'")
    assert recv_exactly(proxy, 6) == b"ready\n"
    proxy.close_timeout = 0.05
    pid = proxy.process.pid
    started = time.monotonic()
    proxy.close()
    assert time.monotonic() - started < PATIENCE
    assert proxy.process.returncode == -signal.SIGKILL
    assert gone(pid)
    after = paramiko_proxyfix.stats()
    assert after["killed_after_timeout"] == before["killed_after_timeout"] + 1
    assert after["closed"] == before["closed"] + 1


def test_the_registry_lists_and_counts_proxies(open_proxy: OpenProxy) -> None:
    before = paramiko_proxyfix.stats()
    proxy = open_proxy("sh -c 'read x; exit 3' --token=s3cret")
    listed = [p for p in paramiko_proxyfix.proxies() if p["pid"] == proxy.process.pid]
    assert len(listed) == 1
    entry = listed[0]
    assert entry["command"] == "sh -c read x; exit 3 --token=***"
    assert entry["state"] == "running" and entry["owner_pid"] == os.getpid()
    assert entry["bytes_in"] == entry["bytes_out"] == 0
    proxy.send(b"\n")
    with pytest.raises(ProxyCommandExited):
        proxy.recv(1)
    listed = [p for p in paramiko_proxyfix.proxies() if p["pid"] == proxy.process.pid]
    assert listed[0]["state"] == "exited(3)" and listed[0]["bytes_out"] == 1
    proxy.close()
    assert proxy.process.pid not in [p["pid"] for p in paramiko_proxyfix.proxies()]
    after = paramiko_proxyfix.stats()
    assert after["started"] == before["started"] + 1
    assert after["ended_by_exit"] == before["ended_by_exit"] + 1
    assert after["closed"] == before["closed"]


def test_close_idle_and_close_all(open_proxy: OpenProxy) -> None:
    first, second = open_proxy("cat"), open_proxy("cat")
    assert paramiko_proxyfix.close_idle(3600) == 0
    idle = extras_of(first)
    assert idle is not None
    idle.io.last_io -= 120  # no I/O for two minutes
    assert paramiko_proxyfix.close_idle(60) == 1
    assert first.closed and not second.closed
    assert paramiko_proxyfix.close_all() == 1
    assert second.closed and gone(second.process.pid)
    assert paramiko_proxyfix.close_all() == 0


def test_a_proxy_that_ends_by_itself_is_one_warning(
    open_proxy: OpenProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="paramiko_proxyfix")
    proxy = open_proxy("sh -c 'echo first >&2; echo \"last\x1b[2J\" >&2; exit 4' -pw")
    with pytest.raises(ProxyCommandExited):
        proxy.recv(1)
    with pytest.raises(ProxyCommandExited):
        proxy.recv(1)  # asked again: no second line
    lines = [r for r in caplog.records if r.name == "paramiko_proxyfix"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    pid = proxy.process.pid
    assert message.startswith(f"proxy {pid} (sh -c ")
    assert message.endswith(") exited with status 4; stderr: last\\x1b[2J")


@pytest.mark.usefixtures("open_proxy")  # for its full check of processes left
def test_a_dropped_proxy_is_closed() -> None:
    proxy = ProxyCommand("cat")
    pid = proxy.process.pid
    del proxy
    gc.collect()
    assert wait_until(lambda: gone(pid), PATIENCE)
