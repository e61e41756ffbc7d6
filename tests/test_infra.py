"""The test infrastructure itself works (against upstream paramiko only)."""

from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import paramiko
import pytest

from tests.support import capped, proxy_cmd, proxy_script
from tests.support.echo import EchoServer, closed_port
from tests.support.fakeserver import FakeServer, blob_bytes
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def start(name: str, *args: object) -> subprocess.Popen[bytes]:
    argv = [sys.executable, proxy_script(name), *map(str, args)]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(proc: subprocess.Popen[bytes], *extra_pids: int) -> None:
    """Kill and reap a proxy, close its pipes, kill any pids it spawned."""
    capped.kill_pids([proc.pid, *extra_pids])
    proc.wait(10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def close_and_reap(client: paramiko.SSHClient, proxy: paramiko.ProxyCommand) -> None:
    """Close a client and reap its proxy, with or without the fix installed.

    Upstream close() only sends SIGTERM, and the transport thread closes the
    proxy once more on its way out: reap only after that thread ended, or
    that second close() raises ProcessLookupError.
    """
    transport = client.get_transport()
    client.close()
    if transport is not None:
        transport.join(10)
    proxy.process.wait(10)
    for pipe in (proxy.process.stdin, proxy.process.stdout, proxy.process.stderr):
        if pipe is not None:
            pipe.close()


def stderr_value(proc: subprocess.Popen[bytes], key: str) -> int:
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert line.startswith(key + "="), line
    return int(line.split("=", 1)[1])


def readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def read_exact(proc: subprocess.Popen[bytes], size: int) -> bytes:
    assert proc.stdout is not None
    out = b""
    while len(out) < size:
        chunk = os.read(proc.stdout.fileno(), size - len(out))
        assert chunk, f"EOF after {out!r}"
        out += chunk
    return out


# -- sshd --------------------------------------------------------------------


def test_sshd_through_real_ssh_w(sshd: Sshd) -> None:
    proxy = paramiko.ProxyCommand(sshd.proxy_command())
    client = sshd.connect(proxy)
    try:
        _, stdout, _ = client.exec_command("echo hi")
        assert stdout.read() == b"hi\n"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        close_and_reap(client, proxy)


def test_ssh_w_to_refused_port_exits_255(sshd: Sshd) -> None:
    argv = sshd.proxy_argv(target_port=closed_port())
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=20)  # stdin stays open until now
    assert proc.returncode == 255
    assert out == b""
    assert err.endswith(
        b"open failed: connect failed: Connection refused\r\n"
        b"stdio forwarding failed\r\n"
    ), err


# -- fake server ---------------------------------------------------------------


def test_fake_server_commands(fake_server: FakeServer) -> None:
    client = fake_server.connect()
    try:
        _, out, _ = client.exec_command("blob 100000 seed1")
        assert out.read() == blob_bytes(100000, "seed1")
        data = blob_bytes(300000, "x")
        stdin, out, _ = client.exec_command("sha256")
        stdin.write(data)
        stdin.channel.shutdown_write()
        assert (
            out.read().decode().strip()
            == __import__("hashlib").sha256(data).hexdigest()
        )
        stdin, out, _ = client.exec_command("cat")
        stdin.write(b"abc")
        stdin.channel.shutdown_write()
        assert out.read() == b"abc"
        _, out, _ = client.exec_command("echo a b")
        assert out.read() == b"a b\n"
        _, out, _ = client.exec_command("exit 3")
        assert out.channel.recv_exit_status() == 3
        t0 = time.monotonic()
        _, out, _ = client.exec_command("sleep 0.3")
        assert out.channel.recv_exit_status() == 0
        assert time.monotonic() - t0 >= 0.3
    finally:
        client.close()


def test_fake_server_stop_joins_threads() -> None:
    before = set(threading.enumerate())
    server = FakeServer()
    client = server.connect()
    client.exec_command("sleep 30")
    server.stop()
    transport = client.get_transport()
    client.close()
    if transport is not None:  # the client's own thread, not the server's
        transport.join(10)
    assert set(threading.enumerate()) - before == set()


def test_relay_proxy_to_fake_server(fake_server: FakeServer) -> None:
    proxy = paramiko.ProxyCommand(
        proxy_cmd("relay", fake_server.host, fake_server.port)
    )
    client = fake_server.connect(proxy)
    try:
        _, out, _ = client.exec_command("blob 200000 s")
        assert out.read() == blob_bytes(200000, "s")
    finally:
        close_and_reap(client, proxy)


# -- proxies -------------------------------------------------------------------


def test_relay_echo_and_stdin_eof(echo: EchoServer) -> None:
    proc = start("relay", echo.host, echo.port)
    assert proc.stdin is not None
    proc.stdin.write(b"ping")
    proc.stdin.flush()
    assert read_exact(proc, 4) == b"ping"
    out, _ = proc.communicate(b"more", timeout=10)  # writes then closes stdin
    assert (out, proc.returncode) == (b"more", 0)


def test_relay_die_after_bytes(echo: EchoServer) -> None:
    proc = start(
        "relay", echo.host, echo.port,
        "--die-after-bytes", 6, "--exit-status", 7, "--stderr", "boom",
    )  # fmt: skip
    out, err = proc.communicate(b"abcd", timeout=10)  # 4 out + 2 back
    assert (out, err, proc.returncode) == (b"ab", b"boom\n", 7)


def test_relay_refused_exits_255() -> None:
    proc = start("relay", "127.0.0.1", closed_port())
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 255 and b"Connection refused" in err


def test_die() -> None:
    proc = start("die", "--status", 3, "--stderr", "bastion says no", "--delay", 0.1)
    out, err = proc.communicate(timeout=10)
    assert (out, err, proc.returncode) == (b"", b"bastion says no\n", 3)


def test_ignore_term_survives_term_and_eof(echo: EchoServer) -> None:
    proc = start("ignore_term", echo.host, echo.port)
    assert proc.stderr is not None and proc.stdin is not None
    assert proc.stderr.readline() == b"ignoring-term\n"
    proc.stdin.close()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None
    proc.kill()
    assert proc.wait(10) == -signal.SIGKILL
    finish(proc)


def test_with_child(echo: EchoServer) -> None:
    proc = start("with_child", echo.host, echo.port)
    child = stderr_value(proc, "child-pid")
    try:
        assert capped.proc_state(child) not in (None, "Z")
        assert child in capped.child_pids(proc.pid)
        assert os.getpgid(child) == os.getpgid(proc.pid)
    finally:
        finish(proc, child)


def test_grandchild_holds_pipe(echo: EchoServer) -> None:
    proc = start("grandchild_holds_pipe", echo.host, echo.port)
    assert proc.stdout is not None
    grandchild = stderr_value(proc, "grandchild-pid")
    try:
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(10) == 0
        assert capped.proc_state(grandchild) not in (None, "Z")
        assert not readable(proc.stdout.fileno(), 0.3)  # exited, yet no EOF
    finally:
        finish(proc, grandchild)
    assert capped.wait_gone([grandchild], 5) == []


def test_stderr_flood_blocks_until_read(echo: EchoServer) -> None:
    proc = start("stderr_flood", echo.host, echo.port, "--bytes", 1 << 20)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write(b"x")
        proc.stdin.flush()
        assert not readable(proc.stdout.fileno(), 0.5)  # type: ignore[union-attr]
        flood = b""
        while not flood.endswith(b"flood-done\n"):
            flood += os.read(proc.stderr.fileno(), 1 << 16)
        assert len(flood) == (1 << 20) + len(b"flood-done\n")
        assert read_exact(proc, 1) == b"x"
    finally:
        finish(proc)


def test_close_stdout_live() -> None:
    proc = start("close_stdout_live", "--seconds", 30)
    assert proc.stdout is not None
    try:
        assert proc.stdout.read() == b""  # EOF ...
        assert proc.poll() is None  # ... while it still runs
    finally:
        finish(proc)


# -- capped and /proc helpers ----------------------------------------------------


def test_run_capped_kills_spinner() -> None:
    code = (
        "import subprocess\n"
        "subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        "while True: pass\n"
    )
    with capped.BusyLoop() as ref:  # what a spin gets meanwhile
        r0 = ref.cpu_seconds()
        result = capped.run_capped(code, timeout=1.5)
        reference = ref.cpu_seconds() - r0
    print(f"spinner: {result.cpu_seconds:.2f} s CPU, busy loop {reference:.2f} s")
    assert result.timed_out and result.returncode == -signal.SIGKILL
    assert result.cpu_seconds > 0.5 * reference
    assert result.wall_seconds < 15  # 10x the 1.5 s cap


def test_run_capped_result_and_callable() -> None:
    result = capped.run_capped("import sys; print('out'); sys.exit(4)", timeout=20)
    assert (result.returncode, result.stdout, result.timed_out) == (4, "out\n", False)
    result = capped.run_capped("tests.support.echo:closed_port", timeout=20)
    assert result.returncode == 0, result.stderr


def test_cpu_share_zombies_and_fds() -> None:
    # A spinning process in a session of its own, as run_capped starts the
    # children the spin tests measure, gets what the reference gets.
    # BusyLoop is that: a loop in its own session that ends with its parent.
    with capped.BusyLoop() as spinner:
        busy = capped.cpu_share(spinner.proc.pid, 1.0)
    # Per thread: this process's autogroup is shared with whatever else the
    # test run is doing, so a spinning thread only has to show clearly.
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [0 for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        read = functools.partial(capped.cpu_seconds, os.getpid(), thread.native_id)
        spinning = capped.cpu_share(read, 0.5)
    finally:
        stop.set()
        thread.join()
    me = functools.partial(capped.cpu_seconds, os.getpid(), threading.get_native_id())
    rest = capped.cpu_share(me, 0.5)  # this thread, asleep in there
    print(
        "spinning process:", busy.report(),
        "spinning thread:", spinning.report(),
        "sleeping thread:", rest.report(),
    )  # fmt: skip
    assert busy.ratio > 0.5, busy  # a spinning process gets what a busy loop gets
    assert spinning.ratio > 0.05, spinning  # 10x headroom under that
    assert rest.ratio < 0.1, rest
    proc = subprocess.Popen(["true"])
    assert capped.wait_gone([proc.pid], 5) == []
    assert capped.count_zombie_children() >= 1
    proc.wait()
    fds = capped.open_fds()
    r, w = os.pipe()
    assert set(capped.open_fds()) - set(fds) == {r, w}
    os.close(r)
    os.close(w)


def test_busy_loop_reference_ends_with_its_parent() -> None:
    """A test killed by its cap must not leave the CPU-hungry reference behind."""
    code = (
        "import time\n"
        "from tests.support import capped\n"
        "with capped.BusyLoop() as ref:\n"
        "    print(ref.proc.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(capped.REPO_ROOT)},
    )
    assert parent.stdout is not None
    try:
        ref = int(parent.stdout.readline())
        assert capped.proc_state(ref) not in (None, "Z")
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    assert capped.wait_gone([ref], 10) == []  # it checks every few ms


def test_stray_processes_sees_orphans() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!"],
        stdout=subprocess.PIPE,
    )
    orphan = int(proc.communicate(timeout=10)[0])
    try:
        assert orphan in capped.stray_processes()
    finally:
        capped.kill_pids([orphan])
    assert capped.wait_gone([orphan], 5) == []
