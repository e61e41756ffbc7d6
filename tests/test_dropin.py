"""Drop-in means drop-in: what callers of upstream paramiko rely on keeps working.

Issue 10: uninstall() with live connections, instances the fix must leave
alone, exceptions that keep their type through pickle and Celery's JSON
result backend, old except clauses, configuration that never breaks an
import, and warnings that point at the caller's line.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.proxy import ProxyCommand

import paramiko_proxyfix
from paramiko_proxyfix import _patch
from paramiko_proxyfix.extras import ATTR as PROCESS_ATTR
from tests.support import REPO_ROOT, upstream_method
from tests.support.fakeserver import FakeServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def reinstall() -> Iterator[None]:
    """Whatever a test uninstalls is installed again afterwards."""
    yield
    paramiko_proxyfix.install()
    assert paramiko_proxyfix.is_installed()


def _child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
    )


# -- 1. reversible per instance ---------------------------------------------------


def test_uninstall_keeps_live_instances_working(reinstall: None) -> None:
    """Read-ahead bytes are not lost and send() still reports what the pipe
    took, after uninstall(); new instances are upstream's."""
    echo = ProxyCommand("cat")
    stalled = ProxyCommand("sleep 60")  # never reads its input
    try:
        echo.settimeout(5)
        assert echo.send(b"hello world!") == 12
        assert echo.recv(2) == b"he"  # the other 10 bytes are read ahead
        assert paramiko_proxyfix.uninstall()
        assert vars(ProxyCommand)["recv"] is upstream_method(ProxyCommand, "recv")
        assert echo.recv(10) == b"llo world!"
        stalled.settimeout(0.2)
        sent = stalled.send(b"x" * (4 << 20))
        assert 0 < sent <= 1 << 20, sent  # upstream would say 4 MiB
        fresh = ProxyCommand("cat")
        assert PROCESS_ATTR not in vars(fresh) and "recv" not in vars(fresh)
        fresh.close()
        fresh.process.wait(5)
        for stream in (fresh.process.stdin, fresh.process.stdout, fresh.process.stderr):
            stream.close()
    finally:
        echo.close()
        stalled.close()
    # Closed by the fix's own close(): reaped, pipes closed.
    for p in (echo, stalled):
        assert p.process.returncode is not None and p.process.stdout.closed


@pytest.mark.unpatched
def test_install_patches_init_last_and_uninstall_restores_it_first(
    reinstall: None,
) -> None:
    names = [name for _, name in _patch._saved]
    assert names[-1] == "__init__"
    calls: list[str] = []
    real = _patch._restore

    def spy(cls: type, name: str, original: Any) -> None:
        calls.append(name)
        real(cls, name, original)

    _patch._restore = spy  # type: ignore[assignment]
    try:
        paramiko_proxyfix.uninstall()
    finally:
        _patch._restore = real  # type: ignore[assignment]
    assert calls[0] == "__init__" and sorted(calls) == sorted(names)


# -- 2. adopt only what we understand ---------------------------------------------


class _UpstreamIO(ProxyCommand):
    """A subclass with upstream's own send and recv (as a library might pin)."""


@pytest.mark.unpatched
def test_a_subclass_with_its_own_io_is_left_alone(
    fake_server: FakeServer, reinstall: None
) -> None:
    _UpstreamIO.send = upstream_method(ProxyCommand, "send")  # type: ignore[method-assign]
    _UpstreamIO.recv = upstream_method(ProxyCommand, "recv")  # type: ignore[method-assign]
    command = f"{sys.executable} {REPO_ROOT}/tests/proxies/relay.py"
    command += f" {fake_server.host} {fake_server.port}"
    paramiko_proxyfix.uninstall()
    sock = _UpstreamIO(command)  # made by upstream, before install
    paramiko_proxyfix.install()
    client = fake_server.connect(sock=sock)
    try:
        time.sleep(0.5)  # idle ticks: the read-loop hook runs five times
        _, out, _ = client.exec_command("echo still here")
        assert out.read() == b"still here\n"
        assert PROCESS_ATTR not in vars(sock)
        assert os.get_blocking(sock.process.stdin.fileno())
        assert os.get_blocking(sock.process.stdout.fileno())
        assert paramiko_proxyfix.proxies() == []
    finally:
        transport = client.get_transport()
        client.close()
        if transport is not None:
            transport.join(10)  # its thread calls upstream's close() last
        sock.process.kill()
        sock.process.wait(5)


class _SocketProxy(ProxyCommand):
    """A ProxyCommand subclass over a plain socket: no ``.process`` at all."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.timeout: float | None = None

    def send(self, content: bytes) -> int:
        return self.sock.send(content)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0


def test_a_subclass_without_a_process_keeps_its_transport(
    fake_server: FakeServer,
) -> None:
    sock = _SocketProxy((fake_server.host, fake_server.port))
    client = fake_server.connect(sock=sock)
    try:
        time.sleep(0.5)  # the read-loop hook ran on each idle tick
        transport = client.get_transport()
        assert transport is not None and transport.is_active()
        assert transport.get_exception() is None
        _, out, _ = client.exec_command("echo fine")
        assert out.read() == b"fine\n"
    finally:
        client.close()


# -- 4. exceptions that travel ----------------------------------------------------


def _examples() -> list[BaseException]:
    return [
        paramiko_proxyfix.ProxyCommandExited("ssh -W t:22 b", -9, "killed\r\n"),
        paramiko_proxyfix.ProxyCommandExited("ssh -W t:22 b", 255, "no route"),
        paramiko_proxyfix.ProxyCommandClosed("ssh -W t:22 b"),
        paramiko_proxyfix.ProxyCommandStartError("", "the command line is empty"),
        paramiko_proxyfix.ProxyCommandNotFound("nope", "No such file", errno.ENOENT),
        paramiko_proxyfix.ProxyCommandNotPermitted("x", "Permission", errno.EACCES),
        paramiko_proxyfix.ProxyCommandClosed("ssh -W t:22 b", "belongs to process 42"),
    ]


@pytest.mark.parametrize("exc", _examples(), ids=lambda e: type(e).__name__)
def test_exceptions_rebuild_from_their_args(exc: BaseException) -> None:
    """``type(exc)(*exc.args)`` is what pickle and Celery's JSON backend do."""
    for again in (type(exc)(*exc.args), pickle.loads(pickle.dumps(exc))):
        assert type(again) is type(exc)
        assert str(again) == str(exc)
        assert vars(again) == vars(exc)
    assert json.loads(json.dumps(exc.args)) == list(exc.args)
    assert "__reduce__" not in vars(type(exc))


@pytest.fixture(scope="module")
def json_worker() -> Iterator[Any]:
    """A real solo worker with the JSON result backend on a real Redis."""
    from tests.celery_app.scenario import start_redis

    workdir = Path(tempfile.mkdtemp(prefix="pfx-json-"))
    redis, url = start_redis(workdir)
    log = workdir / "worker.log"
    env = {**os.environ, "PFX_REDIS_URL": url, "PARAMIKO_PROXYFIX_DISABLE": ""}
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.json_app", "worker"]
            + ["--pool=solo", "--loglevel=INFO", "--without-heartbeat"]
            + ["--without-mingle", "--without-gossip", "-n", "json@%h"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text(
                errors="replace"
            )[-3000:]
            time.sleep(0.1)
        os.environ["PFX_REDIS_URL"] = url
        from tests.json_app import app

        yield app
    finally:
        os.environ.pop("PFX_REDIS_URL", None)
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
            worker.wait(5)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("kind", "expected", "attrs"),
    [
        (
            "exited",
            paramiko_proxyfix.ProxyCommandExited,
            {"returncode": 255, "stderr_tail": "no route to host\n"},
        ),
        (
            "missing",
            paramiko_proxyfix.ProxyCommandNotFound,
            {"errno": errno.ENOENT},
        ),
        ("closed", paramiko_proxyfix.ProxyCommandClosed, {}),
        (
            "foreign",
            paramiko_proxyfix.ProxyCommandForeign,
            {"error": "belongs to process 4242"},
        ),
    ],
)
def test_exceptions_survive_celerys_json_result_backend(
    json_worker: Any, kind: str, expected: type, attrs: dict[str, Any]
) -> None:
    result = json_worker.send_task("pfx.fail", args=[kind])
    with pytest.raises(expected) as info:
        result.get(timeout=60, propagate=True)
    exc = info.value
    assert type(exc) is expected
    for name, value in attrs.items():
        assert getattr(exc, name) == value, name
    assert "ProxyCommand(" in str(exc)
    if kind == "missing":
        assert isinstance(exc, FileNotFoundError)


# -- 5. old except clauses ----------------------------------------------------------


def test_a_missing_binary_is_still_a_file_not_found_error() -> None:
    with pytest.raises(FileNotFoundError) as info:
        ProxyCommand("/nonexistent/ssh -W target:22 bastion")
    exc = info.value
    assert exc.errno == errno.ENOENT
    assert isinstance(exc, paramiko_proxyfix.ProxyCommandStartError)
    assert isinstance(exc, paramiko.ssh_exception.ProxyCommandFailure)


def test_a_file_that_cannot_run_is_still_a_permission_error(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(PermissionError) as info:
        ProxyCommand(str(script))
    assert info.value.errno == errno.EACCES
    assert isinstance(info.value, paramiko_proxyfix.ProxyCommandStartError)


# -- configuration never breaks the import ----------------------------------------


@pytest.mark.unpatched
@pytest.mark.parametrize("disable", ["", "1"])
def test_bad_environment_values_warn_and_use_the_defaults(disable: str) -> None:
    done = _child(
        "import paramiko_proxyfix as p\n"
        "from paramiko_proxyfix.config import current\n"
        "from paramiko_proxyfix import registry\n"
        "print(current().close_timeout, current().stderr_tail,"
        " registry._idle_timeout, p.is_installed())\n",
        PARAMIKO_PROXYFIX_CLOSE_TIMEOUT="one second",
        PARAMIKO_PROXYFIX_STDERR_TAIL="-5",
        PARAMIKO_PROXYFIX_IDLE_TIMEOUT="nan",
        PARAMIKO_PROXYFIX_DISABLE=disable,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.5", "0", "0.0", str(not disable)]
    for variable, used in (
        ("PARAMIKO_PROXYFIX_CLOSE_TIMEOUT='one second'", "the default, 0.5"),
        ("PARAMIKO_PROXYFIX_STDERR_TAIL='-5'", "using 0"),  # its lower bound
        ("PARAMIKO_PROXYFIX_IDLE_TIMEOUT='nan'", "the default, 0"),
    ):
        lines = [x for x in done.stderr.splitlines() if variable in x]
        assert len(lines) == 1, done.stderr
        assert "RuntimeWarning" in lines[0] and used in lines[0]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"stderr_tail": 2.5}, TypeError),
        ({"stderr_tail": "4096"}, TypeError),
        ({"close_timeout": "1"}, TypeError),
        ({"close_timeout": True}, TypeError),
        ({"close_timeout": -1}, ValueError),
        ({"eof_grace": float("nan")}, ValueError),
        ({"close_timeout": float("inf")}, ValueError),
        ({"nonsense": 1}, TypeError),
    ],
)
def test_configure_refuses_bad_values_at_the_call(
    changes: dict[str, Any], error: type
) -> None:
    before = paramiko_proxyfix.config.current()
    with pytest.raises(error):
        paramiko_proxyfix.configure(**changes)
    assert paramiko_proxyfix.config.current() == before


def test_set_idle_timeout_refuses_bad_values() -> None:
    for bad, error in ((-1, ValueError), ("10", TypeError), (float("nan"), ValueError)):
        with pytest.raises(error):
            paramiko_proxyfix.set_idle_timeout(bad)  # type: ignore[arg-type]


@pytest.mark.unpatched
def test_the_unsupported_paramiko_warning_names_the_importing_line(
    tmp_path: Path,
) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        "import paramiko\n"
        "paramiko.__version_info__ = (1, 0, 0)\n"
        "paramiko.__version__ = '1.0.0'\n"
        "import paramiko_proxyfix  # line 4\n"
        "print(paramiko_proxyfix.is_installed())\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert f"{script}:4: RuntimeWarning" in done.stderr, done.stderr
    assert "paramiko 1.0.0 is not supported" in done.stderr
