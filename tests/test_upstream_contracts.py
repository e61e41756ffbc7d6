"""paramiko's own ProxyCommand tests (tests/test_proxy.py), re-stated on real processes.

Upstream's 11 tests mock ``Popen``, ``select`` and ``os.kill``, so they cannot
run against the fix, which uses none of them. Each contract they state is
checked here against real proxies (``cat``, small Python scripts), twice:

- ``fix``: the fixed ProxyCommand (``import paramiko_proxyfix``);
- ``upstream``: paramiko's own, with the fix uninstalled around the test, so
  each contract is shown to be upstream's and each test to be able to fail.

Where the fix deliberately behaves otherwise, the test's name says
``difference`` and both behaviours are asserted; README's "what changes for
your code" lists them.

The same module runs against a paramiko patched with patches/ (whose own
ProxyCommand is the fix), without ``paramiko_proxyfix``::

    PROXYFIX_CONTRACTS_TARGET=patched python -m pytest tests/test_upstream_contracts.py

Then only ``fix`` runs, with the patched build's own ProxyCommand, and the
package is never imported (the last test checks that).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import paramiko
import paramiko.proxy
import pytest
from paramiko import ProxyCommandFailure

from tests.support import REPO_ROOT, capped

#: "shim" (default): the fix and upstream; "patched": a patched paramiko alone.
TARGET = os.environ.get("PROXYFIX_CONTRACTS_TARGET", "shim")

if TARGET == "patched":
    if "_on_started" not in vars(paramiko.proxy.ProxyCommand):
        raise RuntimeError(f"paramiko at {paramiko.__file__} is not a patched build")
    IMPLS = ["fix"]
    # The patched paramiko has the fix's exceptions in paramiko.ssh_exception.
    ERRORS: Any = paramiko.ssh_exception
    _shim: Any = None
else:
    import paramiko_proxyfix as _shim

    # On a paramiko built from patches/ the fix is paramiko's own: there is
    # no upstream behaviour to compare with in this process.
    IMPLS = ["fix"] if _shim._patch.is_built_in() else ["fix", "upstream"]
    ERRORS = _shim

PY = sys.executable
SCRIPTS = {
    "silent": "import time\ntime.sleep(60)\n",
    "meh": "import os, time\nos.write(1, b'meh')\ntime.sleep(60)\n",
    # Writes 3 bytes, then the rest once it reads a line.
    "split": (
        "import os, sys, time\nos.write(1, b'was')\nsys.stdin.readline()\n"
        "os.write(1, b'te of time')\ntime.sleep(60)\n"
    ),
    "fail": "import sys\nsys.stderr.write('no route to app1')\nsys.exit(3)\n",
    "clean_exit": "import sys\nsys.exit(0)\n",
    "exit_on_line": "import sys\nsys.stdin.readline()\n",
    "ignore_term": (
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "os.write(1, b'ready')\ntime.sleep(60)\n"
    ),
    "argv": "import json, os, sys\nos.write(1, json.dumps(sys.argv[1:]).encode())\n",
}


class Proxies:
    """Starts proxies for one implementation and cleans up after either."""

    def __init__(self, impl: str, scripts: Path) -> None:
        self.impl = impl
        self.scripts = scripts
        self.started: list[Any] = []

    def command(self, name: str, *args: str) -> str:
        """A command line with nothing to quote: the same words either way."""
        path = self.scripts / f"{name}.py"
        path.write_text(SCRIPTS[name])
        return " ".join([PY, str(path), *args])

    def start(self, command_line: str) -> Any:
        proxy = paramiko.ProxyCommand(command_line)
        self.started.append(proxy)
        return proxy

    def run(self, name: str, *args: str) -> Any:
        return self.start(self.command(name, *args))

    def cleanup(self) -> None:
        for proxy in self.started:
            if self.impl == "fix":
                proxy.close()
                continue
            # Upstream's close() only sends SIGTERM: reap and close by hand.
            with contextlib.suppress(OSError):
                proxy.process.kill()
            proxy.process.wait(timeout=10)
            for stream in (proxy.process.stdin, proxy.process.stdout,
                           proxy.process.stderr):  # fmt: skip
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which ProxyCommand paramiko has for this test: "fix" or "upstream"."""
    name: str = request.param
    if name == "upstream":
        _shim.uninstall()
        try:
            assert "proxyfix" not in repr(vars(paramiko.ProxyCommand)["recv"])
            yield name
        finally:
            assert _shim.install(), "the fix could not be installed again"
        return
    if _shim is not None:
        assert _shim.is_installed(), "PARAMIKO_PROXYFIX_DISABLE is set?"
    yield name


@pytest.fixture
def proxies(impl: str, tmp_path: Path) -> Iterator[Proxies]:
    made = Proxies(impl, tmp_path)
    try:
        yield made
    finally:
        made.cleanup()  # before `impl` puts the fix back


def wait_readable(proxy: Any, timeout: float = 10) -> None:
    """Until the proxy's stdout has bytes, without reading them."""
    ready, _, _ = select.select([proxy.process.stdout], [], [], timeout)
    assert ready, "the proxy wrote nothing"


def wait_exited(proxy: Any, timeout: float = 10) -> None:
    """Until the proxy has exited (a zombie: nobody reaped it yet)."""
    deadline = time.monotonic() + timeout
    while capped.proc_state(proxy.process.pid) not in ("Z", None):
        assert time.monotonic() < deadline, "the proxy did not exit"
        time.sleep(0.01)


def read_exactly(proxy: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = proxy.recv(size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


def elapsed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


# -- upstream's contracts, held by both -------------------------------------------


@pytest.mark.timeout(30)
def test_init_splits_the_command_string_with_shlex_and_no_shell(
    proxies: Proxies,
) -> None:
    """upstream: test_init_takes_command_string. Three pipes, argv from shlex."""
    script = proxies.command("argv")
    proxy = proxies.start(f"""{script} 'a b' "c'd" '$HOME' '*' ";" x\\ y""")
    assert proxy.cmd == [*script.split(), "a b", "c'd", "$HOME", "*", ";", "x y"]
    # No shell: nothing was expanded, split or run. (Exactly that many bytes
    # are asked for: upstream's recv() would spin at EOF waiting for more.)
    expected = b'["a b", "c\'d", "$HOME", "*", ";", "x y"]'
    assert read_exactly(proxy, len(expected)) == expected


@pytest.mark.timeout(30)
def test_the_proxy_gets_three_pipes(proxies: Proxies) -> None:
    """upstream: test_init_takes_command_string (stdin, stdout, stderr = PIPE)."""
    proxy = proxies.run("silent")
    fds = [os.readlink(f"/proc/{proxy.process.pid}/fd/{n}") for n in (0, 1, 2)]
    assert all(fd.startswith("pipe:") for fd in fds), fds
    assert len(set(fds)) == 3


@pytest.mark.timeout(30)
def test_send_writes_to_stdin_and_returns_the_length(proxies: Proxies) -> None:
    """upstream: test_send_writes_to_process_stdin_returning_length, on ``cat``."""
    proxy = proxies.start("cat")
    assert proxy.send(b"data") == 4
    assert read_exactly(proxy, 4) == b"data"
    assert proxy.send(b"") == 0
    assert proxy.recv(0) == b""


@pytest.mark.timeout(30)
def test_send_failure_raises_ProxyCommandFailure_difference_in_its_error(
    proxies: Proxies,
) -> None:
    """upstream: test_send_raises_ProxyCommandFailure_on_error.

    Difference: upstream's error is the OS error ("Broken pipe"); the fix's is
    a ProxyCommandExited (a ProxyCommandFailure) with the exit status and the
    proxy's stderr.
    """
    command = proxies.command("fail")
    proxy = proxies.start(command)
    wait_exited(proxy)
    with pytest.raises(ProxyCommandFailure) as info:
        proxy.send(b"data")
    assert info.value.command == command
    if proxies.impl == "upstream":
        assert info.value.error == "Broken pipe"
    else:
        assert isinstance(info.value, ERRORS.ProxyCommandExited)
        assert info.value.returncode == 3
        assert info.value.error == "exited with status 3; stderr: no route to app1"


@pytest.mark.timeout(30)
def test_recv_returns_bytes_difference_short_reads(proxies: Proxies) -> None:
    """upstream: test_recv_reads_from_process_stdout_returning_bytes.

    Both return bytes. Difference: upstream loops until ``size`` bytes came
    (here across two writes, 0.3 s apart); the fix returns as soon as any
    bytes are there, like a socket's recv(), and keeps what exceeds ``size``
    for the next call.
    """
    proxy = proxies.run("split")
    wait_readable(proxy)
    if proxies.impl == "upstream":
        later = threading.Timer(0.3, proxy.send, (b"go\n",))
        later.start()
        try:
            assert proxy.recv(5) == b"waste"
        finally:
            later.join()
        assert proxy.recv(5) == b" of t"
        return
    assert proxy.recv(5) == b"was"  # the rest is not even written yet
    proxy.send(b"go\n")
    assert proxy.recv(5) == b"te of"
    assert proxy.recv(5) == b" time"


@pytest.mark.timeout(30)
def test_recv_returns_what_it_has_when_the_timeout_expires(proxies: Proxies) -> None:
    """upstream: test_recv_returns_buffer_on_timeout_if_any_read."""
    proxy = proxies.run("split")
    proxy.settimeout(0.5)
    wait_readable(proxy)
    took, error = elapsed(lambda: setattr(proxy, "got", proxy.recv(5)))
    assert error is None
    assert proxy.got == b"was"
    # Upstream waits out the timeout for the 2 missing bytes; the fix does not.
    if proxies.impl == "upstream":
        assert took >= 0.45
    else:
        assert took < 0.45


@pytest.mark.timeout(30)
def test_recv_raises_socket_timeout_when_nothing_came(proxies: Proxies) -> None:
    """upstream: test_recv_raises_timeout_if_nothing_read."""
    proxy = proxies.run("silent")
    proxy.settimeout(0.3)
    took, error = elapsed(lambda: proxy.recv(5))
    assert isinstance(error, socket.timeout), error
    assert 0.25 <= took < 3.0


@pytest.mark.timeout(30)
def test_recv_raises_ProxyCommandFailure_on_a_read_error(
    proxies: Proxies, tmp_path: Path
) -> None:
    """upstream: test_recv_raises_ProxyCommandFailure_on_non_timeout_error.

    A real read error: the descriptor of the proxy's stdout is made to refer
    to a directory, whose read() fails with EISDIR.
    """
    command = proxies.command("silent")
    proxy = proxies.start(command)
    proxy.settimeout(5)
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.dup2(directory, proxy.process.stdout.fileno())
    finally:
        os.close(directory)
    with pytest.raises(ProxyCommandFailure) as info:
        proxy.recv(5)
    assert info.value.command == command
    assert info.value.error == "Is a directory"


@pytest.mark.timeout(30)
def test_close_ends_the_process_difference_fix_reaps_and_closes_pipes(
    proxies: Proxies,
) -> None:
    """upstream: test_close_kills_subprocess (SIGTERM to the proxy's pid).

    Both end the process with SIGTERM. Difference: upstream leaves a zombie
    and three open pipes for someone else to clean; the fix's close() reaps
    the proxy and closes the pipes before it returns.
    """
    proxy = proxies.run("silent")
    pid = proxy.process.pid
    proxy.close()
    pipes = (proxy.process.stdin, proxy.process.stdout, proxy.process.stderr)
    if proxies.impl == "upstream":
        assert proxy.process.wait(timeout=10) == -signal.SIGTERM
        assert not any(p.closed for p in pipes)
        return
    assert proxy.process.returncode == -signal.SIGTERM
    assert capped.proc_state(pid) is None  # reaped: not even a zombie
    assert all(p.closed for p in pipes)


@pytest.mark.timeout(30)
def test_closed_reflects_exit_difference_without_a_poll(proxies: Proxies) -> None:
    """upstream: test_closed_exposes_whether_subprocess_has_exited.

    Both: False while the proxy runs, True once its exit is known, and
    ``_closed`` says the same. Difference: upstream reads ``returncode``, which
    only changes when someone polls the process, so it says False for a proxy
    that exited long ago; the fix asks the kernel (without reaping).
    """
    proxy = proxies.run("exit_on_line")
    assert proxy.closed is False and proxy._closed is False
    proxy.send(b"\n")
    wait_exited(proxy)
    if proxies.impl == "upstream":
        assert proxy.closed is False  # stale until a poll
        proxy.process.poll()
    assert proxy.closed is True and proxy._closed is True


@pytest.mark.timeout(30)
def test_settimeout_decides_whether_recv_times_out(proxies: Proxies) -> None:
    """upstream: test_timeout_affects_whether_timeout_is_raised."""
    proxy = proxies.run("meh")
    assert proxy.timeout is None
    assert proxy.recv(3) == b"meh"
    quiet = proxies.run("silent")
    quiet.settimeout(7)
    assert quiet.timeout == 7
    quiet.settimeout(0.2)
    with pytest.raises(socket.timeout):
        quiet.recv(3)


@pytest.mark.unpatched
@pytest.mark.timeout(60)
def test_missing_subprocess_module_fails_at_runtime(impl: str) -> None:
    """upstream: test_raises_subprocess_ImportErrors_at_runtime.

    Re-stated by really blocking ``import subprocess`` in a child. Upstream
    imports fine and raises the ImportError from ProxyCommand(). So does the
    fix: ``import paramiko_proxyfix`` (or, in a patched build, ``import
    paramiko``) warns and leaves upstream's ProxyCommand in place.
    """
    code = (
        "import sys, warnings\nsys.modules['subprocess'] = None\n"
        "import paramiko\n"
        f"if {impl == 'fix' and TARGET == 'shim'}:\n"
        "    with warnings.catch_warnings(record=True) as seen:\n"
        "        warnings.simplefilter('always')\n"
        "        import paramiko_proxyfix\n"
        "    assert not paramiko_proxyfix.is_installed()\n"
        "    assert any('no subprocess module' in str(w.message) for w in seen)\n"
        "try:\n    paramiko.ProxyCommand('hi!!!')\n"
        "except ImportError as e:\n    print('ProxyCommand():', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("PARAMIKO_PROXYFIX_DISABLE", None)
    done = subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, env=env, timeout=50
    )
    assert done.returncode == 0, done.stderr
    halted = "import of subprocess halted; None in sys.modules"
    assert done.stdout.strip() == f"ProxyCommand(): {halted}"


# -- where the fix differs on purpose ---------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("no-such-proxy-binary -W app1:22", FileNotFoundError),
        ("ssh -W 'app1:22", ValueError),
    ],
    ids=["missing binary", "unbalanced quote"],
)
def test_a_command_that_cannot_start_raises_what_upstream_raises(
    proxies: Proxies, command: str, error: type[Exception]
) -> None:
    """A missing binary is a FileNotFoundError (the package's names the
    command and is also a ProxyCommandFailure; the fix as paramiko would
    merge it leaves Popen's), unbalanced quotes shlex's ValueError, either
    way."""
    with pytest.raises(error) as info:
        proxies.start(command)
    package = proxies.impl != "upstream" and TARGET == "shim"
    if package and error is FileNotFoundError:
        assert isinstance(info.value, ProxyCommandFailure)
        assert info.value.filename == "no-such-proxy-binary"


@pytest.mark.timeout(30)
def test_difference_an_empty_command_raises_ProxyCommandStartError(
    proxies: Proxies,
) -> None:
    """Upstream's Popen([]) fails with an IndexError, and so does the fix as
    paramiko would merge it; the package raises ProxyCommandStartError (an
    OSError and a ProxyCommandFailure) saying so."""
    if proxies.impl == "upstream" or TARGET == "patched":
        with pytest.raises(IndexError):
            proxies.start("")
        return
    with pytest.raises(ERRORS.ProxyCommandStartError) as info:
        proxies.start("")
    assert isinstance(info.value, ProxyCommandFailure)
    assert "empty" in str(info.value)


@pytest.mark.timeout(30)
def test_error_command_joins_the_words(proxies: Proxies) -> None:
    """``ProxyCommandFailure.command`` is the words joined by spaces, as
    upstream has it."""
    script = proxies.command("fail")
    proxy = proxies.start(f"{script} 'app 1'")
    wait_exited(proxy)
    with pytest.raises(ProxyCommandFailure) as info:
        proxy.send(b"x")
    assert info.value.command == f"{script} app 1"


@pytest.mark.timeout(30)
def test_difference_recv_at_eof_ends_instead_of_spinning(proxies: Proxies) -> None:
    """The bug the fix exists for. At EOF upstream's recv() spins on the
    empty pipe until its timeout (forever without one) and raises
    socket.timeout; the fix returns b"" at once for a clean exit and raises
    ProxyCommandExited (status, stderr) for a failed one."""
    clean, failed = proxies.run("clean_exit"), proxies.run("fail")
    for proxy in (clean, failed):
        proxy.settimeout(0.5)
        wait_exited(proxy)
    if proxies.impl == "upstream":
        for proxy in (clean, failed):
            took, error = elapsed(lambda p=proxy: p.recv(5))
            assert isinstance(error, socket.timeout) and took >= 0.45
        return
    took, error = elapsed(lambda: setattr(clean, "got", clean.recv(5)))
    assert error is None and clean.got == b"" and took < 0.45
    took, error = elapsed(lambda: failed.recv(5))
    assert isinstance(error, ERRORS.ProxyCommandExited), error
    assert error.returncode == 3 and error.stderr_tail == "no route to app1"
    assert took < 0.45


@pytest.mark.timeout(30)
def test_difference_send_reports_partial_writes(proxies: Proxies) -> None:
    """To a proxy that reads nothing: upstream's send() blocks until all is
    written (forever here) and then reports len(data) whatever was written;
    the fix writes what the pipe takes, returns that count, and honours the
    timeout when nothing fits."""
    proxy = proxies.run("silent")
    data = b"x" * (8 << 20)  # more than any pipe holds
    if proxies.impl == "upstream":
        blocked = threading.Thread(target=lambda: proxy.send(data), daemon=True)
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive()  # still inside send()
        proxy.process.kill()  # its write then fails; the thread ends
        blocked.join(10)
        assert not blocked.is_alive()
        return
    proxy.settimeout(0.3)
    counts: list[int] = []
    took, error = 0.0, None
    while error is None and len(counts) < 100:
        # The pipe is grown once it is found full, so a few sends succeed.
        took, error = elapsed(lambda: counts.append(proxy.send(data)))
    print(f"sends before the timeout: {counts}")
    assert counts and all(0 < n < len(data) for n in counts)
    assert isinstance(error, socket.timeout), error
    assert 0.25 <= took < 3.0


@pytest.mark.timeout(30)
def test_difference_close_escalates_to_sigkill(proxies: Proxies) -> None:
    """A proxy that ignores SIGTERM: upstream's close() leaves it running;
    the fix sends SIGKILL after half its close timeout (0.5 s by default)."""
    proxy = proxies.run("ignore_term")
    assert read_exactly(proxy, 5) == b"ready"  # its handler is in place
    took, _ = elapsed(proxy.close)
    if proxies.impl == "upstream":
        time.sleep(0.3)
        assert proxy.process.poll() is None
        return
    assert proxy.process.returncode == -signal.SIGKILL
    assert took < 5.0


@pytest.mark.timeout(30)
def test_difference_close_after_the_proxy_was_reaped(proxies: Proxies) -> None:
    """paramiko #1713: once the proxy was reaped (``process.wait()``),
    upstream's close() raises ProcessLookupError; the fix's returns."""
    proxy = proxies.run("clean_exit")
    proxy.process.wait(timeout=10)
    if proxies.impl == "upstream":
        with pytest.raises(ProcessLookupError):
            proxy.close()
        return
    proxy.close()
    assert proxy.closed is True


@pytest.mark.timeout(30)
def test_difference_send_after_close_raises_ProxyCommandClosed(
    proxies: Proxies,
) -> None:
    """After close(): upstream's send() goes to a pipe whose reader got
    SIGTERM (it may even succeed); the fix raises ProxyCommandClosed, a
    ProxyCommandFailure (an SSHException, as upstream's failures are), and
    ``closed`` is True at once (upstream: only after a poll)."""
    proxy = proxies.run("silent")
    proxy.close()
    if proxies.impl == "upstream":
        assert proxy.closed is False
        return
    assert proxy.closed is True
    with pytest.raises(ERRORS.ProxyCommandClosed) as info:
        proxy.send(b"x")
    assert isinstance(info.value, ProxyCommandFailure)
    assert not isinstance(info.value, OSError)


@pytest.mark.timeout(30)
def test_settimeout_takes_what_upstream_takes(proxies: Proxies) -> None:
    """Any value is stored, as upstream does; a negative one times out at
    once. Neither has gettimeout()."""
    proxy = proxies.run("silent")
    proxy.settimeout(-1)
    assert proxy.timeout == -1
    assert not hasattr(proxy, "gettimeout")
    if proxies.impl != "upstream":  # upstream would read whatever came
        with pytest.raises(socket.timeout):
            proxy.recv(1)


@pytest.mark.timeout(30)
def test_recv_of_a_negative_size_returns_nothing(proxies: Proxies) -> None:
    proxy = proxies.run("meh")
    assert proxy.recv(-1) == b""
    assert proxy.recv(0) == b""


@pytest.mark.timeout(30)
def test_process_args_is_the_command(proxies: Proxies) -> None:
    """``proxy.process.args`` is the split command, as upstream's, even where
    the fix starts it through util-linux's ``setpriv --pdeathsig KILL``
    (which then execs the command under the same pid)."""
    proxy = proxies.start("cat")
    assert proxy.cmd == ["cat"]
    assert list(proxy.process.args) == ["cat"]
    deadline = time.monotonic() + 10
    while not os.readlink(f"/proc/{proxy.process.pid}/exe").endswith("/cat"):
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.01)


def _has_tty() -> bool:
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


@pytest.mark.timeout(30)
def test_difference_without_a_terminal_the_proxy_leads_its_own_session(
    proxies: Proxies,
) -> None:
    """Upstream's proxy stays in the caller's process group (a Ctrl-C, or a
    signal to the group, reaches it too). Without a controlling terminal (a
    worker, a service) the fix gives each proxy a session of its own, so
    close() can signal it with everything it started; with one, it stays in
    the caller's group so ``ssh`` can ask for a passphrase. That is the
    package's: the fix as paramiko would merge it starts the command as
    upstream does."""
    proxy = proxies.run("silent")
    pid = proxy.process.pid
    if proxies.impl == "upstream" or TARGET == "patched" or _has_tty():
        assert os.getpgid(pid) == os.getpgid(0)
        return
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid


# -- the same contracts against a patched paramiko ---------------------------------


def test_the_package_was_not_imported_against_a_patched_build() -> None:
    """In patched mode the contracts must hold without paramiko_proxyfix."""
    if TARGET == "patched":
        assert "paramiko_proxyfix" not in sys.modules
        assert "_on_started" in vars(paramiko.proxy.ProxyCommand)
    else:
        assert TARGET == "shim"
        assert "paramiko_proxyfix" in sys.modules


if TARGET == "shim":  # in patched mode this module is what the venv runs

    @pytest.mark.slow
    @pytest.mark.timeout(900)
    @pytest.mark.parametrize("version", ["2.12.0", "5.1.0"])  # oldest, newest
    def test_contracts_hold_for_the_patched_paramiko_without_the_package(
        tmp_path: Path, version: str
    ) -> None:
        """paramiko built with its patch from patches/, in a venv without
        paramiko_proxyfix: this module, in patched mode, passes there."""
        built = subprocess.run(
            [PY, str(REPO_ROOT / "tools" / "build_patched_wheel.py"), version,
             "--out", str(tmp_path / "dist")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        (wheel,) = (tmp_path / "dist").glob(f"paramiko-{version}-*.whl")
        venv = tmp_path / "venv"
        subprocess.run([PY, "-m", "venv", str(venv)], check=True, timeout=120)
        python = str(venv / "bin" / "python")
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "bcrypt", "cryptography", "pynacl", "invoke", "six", "pytest",
             "pytest-timeout", str(wheel)],
            check=True, timeout=600,
        )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PROXYFIX_CONTRACTS_TARGET"] = "patched"
        done = subprocess.run(
            [python, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             "tests/test_upstream_contracts.py"],
            capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        print(done.stdout[-2000:])
        assert done.returncode == 0, done.stdout + done.stderr
        # Every test ran: none skipped, none deselected.
        summary = done.stdout.strip().splitlines()[-1]
        # (paramiko 2.12 draws deprecation warnings from today's cryptography)
        assert re.fullmatch(r"\d+ passed(, \d+ warnings?)? in .*", summary), summary
        assert int(summary.split()[0]) >= 20
