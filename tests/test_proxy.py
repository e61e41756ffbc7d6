"""The patched ProxyCommand on its own: small local proxies, no SSH.

Each test names the point of the issue it covers. The upstream side of each
bug is shown by calling the saved original method where that cannot hang, and
in a capped child process where it would.
"""

from __future__ import annotations

import errno
import os
import resource
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.proxy import ProxyCommand
from paramiko.ssh_exception import ProxyCommandFailure

import paramiko_proxyfix
from tests.support import capped, ended, stderr_tail, upstream_method

pytestmark = pytest.mark.timeout(30)


def py(code: str) -> str:
    """A ProxyCommand line running a Python snippet."""
    return shlex.join([sys.executable, "-c", code])


SILENT = py("import time; time.sleep(60)")


@pytest.fixture
def proxies() -> Iterator[list[ProxyCommand]]:
    made: list[ProxyCommand] = []
    yield made
    for p in made:
        p.close()


def start(made: list[ProxyCommand], command: str) -> ProxyCommand:
    p = ProxyCommand(command)
    made.append(p)
    return p


def gone(pid: int) -> bool:
    return capped.proc_state(pid) is None


# -- 4. socket semantics -------------------------------------------------------


def test_recv_returns_as_soon_as_any_bytes_arrive(proxies: list) -> None:
    p = start(proxies, py("import os,time; os.write(1, b'abc'); time.sleep(60)"))
    t0 = time.monotonic()
    assert p.recv(1000) == b"abc"  # upstream waits for all 1000 bytes
    assert time.monotonic() - t0 < 5


def test_timeout_raises_and_never_loses_bytes(proxies: list) -> None:
    p = start(
        proxies,
        py(
            "import os,sys,time\n"
            "os.write(1, b'hello'); sys.stdin.buffer.read(1); os.write(1, b'!')\n"
            "time.sleep(60)"
        ),
    )
    p.settimeout(0.2)
    assert capped.wait_readable(p.process.stdout, 10)  # started: 0.2 s may not do
    assert p.recv(2) == b"he"
    assert p.recv(100) == b"llo"
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        p.recv(100)
    assert 0.15 < time.monotonic() - t0 < 2
    p.send(b"go")
    assert capped.wait_readable(p.process.stdout, 10)
    assert p.recv(100) == b"!"
    assert p.timeout == 0.2


def test_partial_data_then_timeout_returns_the_data(proxies: list) -> None:
    p = start(proxies, py("import os,time; os.write(1, b'xy'); time.sleep(60)"))
    p.settimeout(0.1)
    assert capped.wait_readable(p.process.stdout, 10)  # started: 0.1 s may not do
    assert p.recv(10) == b"xy"


@pytest.fixture
def high_fds() -> Iterator[None]:
    """Occupy descriptors up to 1100 so new pipes land above 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    fillers = []
    fd = os.open(os.devnull, os.O_RDONLY)
    fillers.append(fd)
    while max(fillers) < 1100:
        fillers.append(os.dup(fd))
    try:
        yield
    finally:
        for f in fillers:
            os.close(f)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.unpatched
def test_works_with_descriptors_above_1023(high_fds: None, proxies: list) -> None:
    p = start(proxies, "cat")
    assert p.process.stdout.fileno() > 1023
    p.settimeout(5)
    assert p.send(b"ping") == 4
    assert p.recv(4) == b"ping"
    upstream_recv = upstream_method(ProxyCommand, "recv")
    with pytest.raises(ValueError, match="filedescriptor out of range"):
        upstream_recv(p, 4)


# -- 1. EOF ------------------------------------------------------------------


def test_clean_exit_is_eof_after_the_data(proxies: list) -> None:
    p = start(proxies, py("import os; os.write(1, b'last words')"))
    p.settimeout(5)
    got = b""
    while True:
        chunk = p.recv(3)
        if not chunk:
            break
        got += chunk
    assert got == b"last words"
    assert p.recv(3) == b""  # EOF stays EOF
    assert p.closed


def test_failed_exit_raises_with_status_and_stderr_after_data(proxies: list) -> None:
    p = start(
        proxies,
        py(
            "import os,sys; os.write(1, b'data'); "
            "sys.stderr.write('channel 0: open failed: connect failed\\n'); "
            "sys.exit(255)"
        ),
    )
    p.settimeout(5)
    assert p.recv(100) == b"data"
    with pytest.raises(paramiko_proxyfix.ProxyCommandExited) as info:
        p.recv(100)
    exc = info.value
    assert isinstance(exc, ProxyCommandFailure) and isinstance(exc, EOFError)
    assert exc.returncode == 255 and exc.signal_name is None
    assert "open failed" in exc.stderr_tail
    assert sys.executable in exc.command
    assert "exited with status 255" in str(exc) and "open failed" in str(exc)
    with pytest.raises(paramiko_proxyfix.ProxyCommandExited):
        p.recv(100)  # and it stays failed


def test_killed_proxy_raises_with_signal_name(proxies: list) -> None:
    p = start(proxies, SILENT)
    os.kill(p.process.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(paramiko_proxyfix.ProxyCommandExited) as info:
        p.recv(10)
    assert info.value.signal_name == "SIGKILL"
    assert info.value.returncode == -signal.SIGKILL
    assert "killed by SIGKILL" in str(info.value)
    assert time.monotonic() - t0 < 1


@pytest.mark.unpatched
def test_upstream_recv_spins_at_eof() -> None:
    """The bug, for contrast: upstream recv at EOF never returns."""
    with capped.BusyLoop() as ref:  # what a spin gets meanwhile
        r0 = ref.cpu_seconds()
        result = capped.run_capped(
            "import paramiko_proxyfix, paramiko\n"
            "paramiko_proxyfix.uninstall()\n"
            "p = paramiko.ProxyCommand('true')\n"
            "p.recv(10)\n"
            "print('returned')\n",
            timeout=3,
        )
        reference = ref.cpu_seconds() - r0
    print(f"upstream recv: {result.cpu_seconds:.2f} s CPU, busy loop {reference:.2f} s")
    assert result.timed_out, result
    assert result.cpu_seconds > 0.5 * reference, result  # it spun, it did not sleep


# -- 5. send -------------------------------------------------------------------


def test_send_reports_what_was_written_and_honours_timeout(proxies: list) -> None:
    p = start(proxies, SILENT)  # never reads its stdin
    p.settimeout(0.3)
    data = b"x" * (4 << 20)
    sent = p.send(data)
    assert 0 < sent < len(data)  # upstream claims len(data)
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        while True:
            p.send(data)
    assert time.monotonic() - t0 < 3


@pytest.mark.unpatched
def test_upstream_send_blocks_forever_on_a_stalled_proxy() -> None:
    result = capped.run_capped(
        "import paramiko_proxyfix, paramiko, sys\n"
        "paramiko_proxyfix.uninstall()\n"
        f"p = paramiko.ProxyCommand({SILENT!r})\n"
        "p.settimeout(0.3)\n"
        "p.send(b'x' * (4 << 20))\n"
        "print('returned')\n",
        timeout=3,
    )
    assert result.timed_out and "returned" not in result.stdout, result


def test_send_to_a_dead_proxy_raises_the_rich_failure(proxies: list) -> None:
    p = start(
        proxies, py("import sys; sys.stderr.write('bastion says no\\n'); sys.exit(7)")
    )
    p.settimeout(5)
    assert ended(p)
    with pytest.raises(paramiko_proxyfix.ProxyCommandExited) as info:
        for _ in range(100):
            p.send(b"x" * 65536)
    assert info.value.returncode == 7
    assert "bastion says no" in str(info.value)


# -- 6. stderr -----------------------------------------------------------------


def test_stderr_flood_never_blocks_and_tail_is_bounded(proxies: list) -> None:
    flood = py(
        "import os,sys,time\n"
        "for i in range(512): os.write(2, (b'%05d ' % i) + b'e' * 8186 + b'\\n')\n"
        "os.write(2, b'the end\\n'); os.write(1, b'ok'); sys.exit(3)"
    )
    p = start(proxies, flood)
    p.settimeout(10)
    assert p.recv(2) == b"ok"  # 4 MiB of stderr went first
    with pytest.raises(paramiko_proxyfix.ProxyCommandExited) as info:
        p.recv(2)
    tail = info.value.stderr_tail
    assert len(tail.encode()) <= paramiko_proxyfix.config.current().stderr_tail
    assert tail.endswith("the end\n") and tail == stderr_tail(p)


@pytest.mark.unpatched
def test_upstream_blocks_on_a_stderr_flood() -> None:
    flood = py(
        "import os\nfor i in range(64): os.write(2, b'e' * 65536)\nos.write(1, b'ok')"
    )
    result = capped.run_capped(
        "import paramiko_proxyfix, paramiko\n"
        "paramiko_proxyfix.uninstall()\n"
        f"p = paramiko.ProxyCommand({flood!r})\n"
        "p.settimeout(2)\n"
        "try:\n"
        "    print(p.recv(2))\n"
        "except Exception as e:\n"
        "    print('error', type(e).__name__)\n",
        timeout=10,
    )
    assert "error timeout" in result.stdout or "error TimeoutError" in result.stdout, (
        result
    )


# -- 7. close ------------------------------------------------------------------


def test_close_reaps_and_closes_all_three_pipes(proxies: list) -> None:
    p = start(proxies, "cat")
    pid = p.process.pid
    fds = [
        p.process.stdin.fileno(),
        p.process.stdout.fileno(),
        p.process.stderr.fileno(),
    ]
    assert not p.closed
    p.close()
    assert p.closed and p.process.returncode is not None
    assert gone(pid)  # reaped: not even a zombie
    assert all(f.closed for f in (p.process.stdin, p.process.stdout, p.process.stderr))
    open_now = capped.open_fds()
    assert not set(fds) & set(open_now) or all(
        os.readlink(f"/proc/self/fd/{fd}").find(str(pid)) < 0
        for fd in set(fds) & set(open_now)
    )
    p.close()  # idempotent


def test_close_escalates_to_sigkill_within_the_timeout(proxies: list) -> None:
    p = start(
        proxies,
        py(
            "import signal,sys,time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "sys.stdout.write('ready'); sys.stdout.flush()\n"
            "time.sleep(60)"
        ),
    )
    p.settimeout(5)
    assert p.recv(5) == b"ready"
    t0 = time.monotonic()
    p.close()
    took = time.monotonic() - t0
    assert p.process.returncode == -signal.SIGKILL
    slack = max(0.2, 10 * capped.kill_and_reap_now(1))
    assert took <= paramiko_proxyfix.config.current().close_timeout + slack, took


def test_close_timeout_is_configurable(proxies: list) -> None:
    old = paramiko_proxyfix.config.current()
    paramiko_proxyfix.configure(close_timeout=0.2)
    try:
        p = start(
            proxies,
            py(
                "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('r', flush=True); time.sleep(60)"
            ),
        )
        p.settimeout(5)
        p.recv(1)
        t0 = time.monotonic()
        p.close()
        assert time.monotonic() - t0 < 0.5
        assert p.process.returncode == -signal.SIGKILL
    finally:
        paramiko_proxyfix.configure(close_timeout=old.close_timeout)
    with pytest.raises(ValueError):
        paramiko_proxyfix.configure(close_timeout=-1)
    with pytest.raises(TypeError):
        paramiko_proxyfix.configure(nonsense=1)


def test_close_terminates_the_processes_the_proxy_started(proxies: list) -> None:
    p = start(
        proxies,
        py(
            "import os,subprocess,sys,time\n"
            "c = subprocess.Popen(['sleep', '600'])\n"
            "os.write(1, str(c.pid).encode() + b'\\n'); time.sleep(60)"
        ),
    )
    p.settimeout(5)
    child = int(p.recv(100).strip())
    assert capped.proc_state(child) not in (None, "Z")
    p.close()
    assert capped.wait_gone([child], 2) == []


def test_close_is_safe_after_the_process_exited(proxies: list) -> None:
    p = start(proxies, "true")
    assert ended(p)
    assert p.closed  # exited, not yet closed
    p.close()  # upstream: ProcessLookupError
    p.close()
    assert gone(p.process.pid)


@pytest.mark.unpatched
def test_upstream_close_leaves_zombie_and_pipes() -> None:
    result = capped.run_capped(
        "import paramiko_proxyfix, paramiko, os, time\n"
        "paramiko_proxyfix.uninstall()\n"
        "p = paramiko.ProxyCommand('cat')\n"
        "p.close(); time.sleep(0.5)\n"
        "state = open(f'/proc/{p.process.pid}/stat').read().split(')')[1].split()[0]\n"
        "print(state, p.process.stdout.closed)\n"
        "p2 = paramiko.ProxyCommand('true'); time.sleep(0.5)\n"
        "try:\n"
        "    p2.close()\n"
        "except ProcessLookupError:\n"
        "    print('ProcessLookupError')\n",
        timeout=10,
    )
    assert "Z False" in result.stdout, result
    # upstream kills an unreaped zombie without error, so this line may be absent


@pytest.mark.parametrize("blocked_in", ["recv", "send"])
def test_close_from_another_thread_while_blocked(
    proxies: list, blocked_in: str
) -> None:
    p = start(proxies, SILENT)
    outcome: list[object] = []

    def worker() -> None:
        try:
            if blocked_in == "recv":
                outcome.append(p.recv(100))
            else:
                while True:
                    p.send(b"x" * 65536)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.3)
    p.close()
    t.join(5)
    assert not t.is_alive()
    [result] = outcome
    if isinstance(result, BaseException):
        assert isinstance(result, ProxyCommandFailure), repr(result)
        assert not (isinstance(result, OSError) and result.errno == errno.EBADF)
    else:
        assert result == b""
    assert gone(p.process.pid)


def test_reusing_a_closed_proxy_is_an_ssh_exception(proxies: list) -> None:
    """sshtunnel's restart() reuses a closed ProxyCommand: upstream failed
    with an SSHException there, so the fix does too (ProxyCommandClosed)."""
    p = start(proxies, "cat")
    p.close()
    with pytest.raises(paramiko_proxyfix.ProxyCommandClosed) as info:
        p.send(b"late")
    exc = info.value
    assert isinstance(exc, paramiko.SSHException)
    assert isinstance(exc, ProxyCommandFailure)  # upstream's except clauses
    assert not isinstance(exc, OSError)  # paramiko's writer must not eat it
    assert "closed" in str(exc)
    transport = paramiko.Transport(p)
    with pytest.raises(paramiko_proxyfix.ProxyCommandClosed):
        transport.start_client(timeout=10)


def test_close_with_many_threads_racing(proxies: list) -> None:
    p = start(proxies, "cat")
    p.settimeout(0.05)
    errors: list[BaseException] = []
    stop = threading.Event()

    def io() -> None:
        while not stop.is_set():
            try:
                p.send(b"abc")
                p.recv(3)
            except (socket.timeout, ProxyCommandFailure):
                pass
            except BaseException as exc:
                errors.append(exc)
                return
            if p.closed:
                return

    threads = [threading.Thread(target=io) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    closers = [threading.Thread(target=p.close) for _ in range(3)]
    for t in closers:
        t.start()
    for t in closers + threads:
        t.join(5)
    stop.set()
    assert not errors, errors
    assert gone(p.process.pid)


# -- 9, 10. bad commands, no shell ----------------------------------------------


@pytest.mark.parametrize(
    "command, words",
    [
        ("/nonexistent/ssh -W host:22 bastion", "No such file or directory"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_bad_commands_fail_at_construction(command: str, words: str) -> None:
    with pytest.raises(paramiko_proxyfix.ProxyCommandStartError) as info:
        ProxyCommand(command)
    assert words in str(info.value)
    assert f'ProxyCommand("{" ".join(command.split())}")' in str(info.value)


def test_unbalanced_quotes_fail_as_upstream() -> None:
    with pytest.raises(ValueError, match="No closing quotation"):
        ProxyCommand("ssh -W 'unbalanced")


def test_non_string_command_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        ProxyCommand(["ssh", "-W"])  # type: ignore[arg-type]


def test_no_shell_is_involved(proxies: list, tmp_path) -> None:
    marker = tmp_path / "pwned"
    p = start(proxies, f"echo $HOME; touch {marker}")
    p.settimeout(5)
    out = b""
    while chunk := p.recv(100):
        out += chunk
    assert out == f"$HOME; touch {marker}\n".encode()
    assert not marker.exists()


# -- 12. exact bytes -----------------------------------------------------------


@pytest.mark.parametrize("status", [0, 3])
def test_every_byte_written_before_exit_arrives(proxies: list, status: int) -> None:
    import hashlib

    p = start(
        proxies,
        py(
            "import hashlib,os,sys\n"
            "data = b''.join(hashlib.sha256(b'%d' % i).digest()\n"
            "               for i in range(131072))\n"
            f"os.write(1, data); sys.exit({status})"
        ),
    )
    expected = hashlib.sha256(
        b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(131072))
    ).hexdigest()
    p.settimeout(10)
    got = bytearray()
    try:
        while chunk := p.recv(4000):
            got += chunk
    except paramiko_proxyfix.ProxyCommandExited as exc:
        assert exc.returncode == status != 0
    else:
        assert status == 0
    assert len(got) == 4 << 20
    assert hashlib.sha256(got).hexdigest() == expected
