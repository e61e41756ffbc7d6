"""What the fix takes from outside, and what it shows: nothing turns it on its host.

PATH (setpriv), environment values, a proxy's stderr, the command line in
logs and snapshots, use after close, uninstall(). Each scenario that could
hang runs in a capped child process.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.proxy import ProxyCommand

import paramiko_proxyfix
from tests.support import capped, ended

pytestmark = pytest.mark.timeout(60)


def _last_json(result: capped.CappedResult) -> Any:
    assert not result.timed_out, f"the scenario hung:\n{result.stderr}"
    lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines, f"exit {result.returncode}, no report:\n{result.stderr}"
    return json.loads(lines[-1])


# -- setpriv is never taken from PATH ---------------------------------------------

PLANTED_SETPRIV = """
import json, os, shutil, sys
import paramiko, paramiko_proxyfix
from paramiko_proxyfix import spawn
p = paramiko.ProxyCommand("/bin/cat")
p.settimeout(5)
p.send(b"ping")
echo = p.recv(4).decode()
p.close()
print(json.dumps({"echo": echo, "which": shutil.which("setpriv"),
                  "used": spawn._find_setpriv()}))
"""


def test_setpriv_is_never_taken_from_path(tmp_path: Path) -> None:
    """A ``setpriv`` first on PATH (someone else's directory, or the cwd
    through a relative entry) never runs: the fix uses util-linux's by its
    fixed, root-owned path, or none."""
    marker = tmp_path / "planted-setpriv-ran"
    for folder in (tmp_path / "bin", tmp_path / "cwd"):
        folder.mkdir()
        fake = folder / "setpriv"
        fake.write_text(f"#!/bin/sh\ntouch {marker}\necho --pdeathsig\nexit 0\n")
        fake.chmod(0o755)
    for path in (f"{tmp_path / 'bin'}:{os.environ['PATH']}", f".:{os.environ['PATH']}"):
        env = {"PATH": path}
        code = f"import os; os.chdir({str(tmp_path / 'cwd')!r})\n" + PLANTED_SETPRIV
        data = _last_json(capped.run_capped(code, 30, env))
        print(path.split(":")[0], data)
        assert data["echo"] == "ping", data
        assert data["which"] and data["which"].startswith(("/tmp", ".", str(tmp_path)))
        assert data["used"] in ("/usr/bin/setpriv", ""), data
        assert not marker.exists(), "the planted setpriv ran"


def test_a_setpriv_others_may_change_is_refused(tmp_path: Path) -> None:
    from paramiko_proxyfix import spawn

    copy = tmp_path / "setpriv"
    copy.write_bytes(Path("/usr/bin/setpriv").read_bytes())
    copy.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    assert spawn._trusted("/usr/bin/setpriv")
    assert spawn._trusted(str(copy)) is (os.geteuid() == 0)  # root-owned here
    copy.chmod(0o775)  # group-writable
    assert not spawn._trusted(str(copy))
    copy.chmod(0o755)
    os.chmod(tmp_path, 0o777)  # anyone may replace it
    assert not spawn._trusted(str(copy))
    os.chmod(tmp_path, 0o755)


# -- environment values ------------------------------------------------------------

ENV_PROBE = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import paramiko_proxyfix
    from paramiko_proxyfix import config, registry
    s = config.current()
    print(json.dumps({"installed": paramiko_proxyfix.is_installed(),
                      "close_timeout": s.close_timeout, "stderr_tail": s.stderr_tail,
                      "eof_grace": s.eof_grace, "idle": registry._idle_timeout,
                      "warnings": [str(w.message) for w in caught]}))
"""


@pytest.mark.unpatched
@pytest.mark.parametrize(
    ("value", "disabled", "warns"),
    [(v, True, False) for v in ("1", "true", "YES", "On")]
    + [(v, False, False) for v in ("0", "false", "No", "OFF", "")]
    + [(v, False, True) for v in ("2", "disable", "y")],
)
def test_the_disable_switch(value: str, disabled: bool, warns: bool) -> None:
    """On for 1/true/yes/on, off for 0/false/no/off/"" (any case); anything
    else warns and keeps the fix (0.2 read "false" as "disable")."""
    data = _last_json(
        capped.run_capped(ENV_PROBE, 30, {"PARAMIKO_PROXYFIX_DISABLE": value})
    )
    assert data["installed"] is (not disabled), data
    said = [w for w in data["warnings"] if "PARAMIKO_PROXYFIX_DISABLE" in w]
    assert bool(said) is warns, data
    if warns:
        assert "the fix stays on" in said[0]


@pytest.mark.parametrize(
    ("variable", "value", "field", "used", "words"),
    [
        (
            "PARAMIKO_PROXYFIX_CLOSE_TIMEOUT",
            "1e12",
            "close_timeout",
            3600.0,
            "using 3600",
        ),
        ("PARAMIKO_PROXYFIX_CLOSE_TIMEOUT", "-1", "close_timeout", 0.0, "using 0"),
        (
            "PARAMIKO_PROXYFIX_CLOSE_TIMEOUT",
            "inf",
            "close_timeout",
            0.5,
            "not a number",
        ),
        ("PARAMIKO_PROXYFIX_EOF_GRACE", "nan", "eof_grace", 0.2, "not a number"),
        (
            "PARAMIKO_PROXYFIX_STDERR_TAIL",
            "1e9",
            "stderr_tail",
            1 << 20,
            "using 1048576",
        ),
        ("PARAMIKO_PROXYFIX_IDLE_TIMEOUT", "1e-9", "idle", 1.0, "using 1"),
        ("PARAMIKO_PROXYFIX_IDLE_TIMEOUT", "86400", "idle", 3600.0, "using 3600"),
        ("PARAMIKO_PROXYFIX_IDLE_TIMEOUT", "0", "idle", 0.0, None),
        ("PARAMIKO_PROXYFIX_IDLE_TIMEOUT", "30", "idle", 30.0, None),
    ],
)
def test_environment_limits_have_bounds(
    variable: str, value: str, field: str, used: float, words: str | None
) -> None:
    """Out of bounds warns and uses the bound; not a finite number warns and
    uses the default; the import never fails."""
    data = _last_json(capped.run_capped(ENV_PROBE, 30, {variable: value}))
    assert data["installed"] is True, data
    assert data[field] == used, data
    said = [w for w in data["warnings"] if variable in w]
    if words is None:
        assert said == [], data
    else:
        assert len(said) == 1 and words in said[0], data


@pytest.mark.parametrize(
    "changes",
    [{"close_timeout": 1e12}, {"eof_grace": 3601}, {"stderr_tail": (1 << 20) + 1}],
)
def test_configure_refuses_values_out_of_bounds(changes: dict[str, float]) -> None:
    before = paramiko_proxyfix.config.current()
    with pytest.raises(ValueError, match="between"):
        paramiko_proxyfix.configure(**changes)
    assert paramiko_proxyfix.config.current() == before


def test_configured_limits_reach_the_fix() -> None:
    before = paramiko_proxyfix.config.current()
    try:
        paramiko_proxyfix.configure(close_timeout=2.0, stderr_tail=100, eof_grace=0.5)
        assert (ProxyCommand.close_timeout, ProxyCommand.stderr_limit) == (2.0, 100)
        assert ProxyCommand.eof_timeout == 0.5
    finally:
        paramiko_proxyfix.configure(
            close_timeout=before.close_timeout,
            stderr_tail=before.stderr_tail,
            eof_grace=before.eof_grace,
        )
    assert ProxyCommand.close_timeout == before.close_timeout


@pytest.mark.parametrize("bad", [0.5, -1, 1e-9, float("nan"), float("inf"), 7200])
def test_an_idle_timeout_is_zero_or_within_bounds(bad: float) -> None:
    with pytest.raises(ValueError, match="idle timeout"):
        paramiko_proxyfix.set_idle_timeout(bad)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_close_idle_takes_only_a_finite_number_above_zero(bad: float) -> None:
    """``now - last_io < nan`` is never true: 0.2 closed busy proxies for it."""
    busy = ProxyCommand("cat")
    try:
        with pytest.raises(ValueError, match="finite number > 0"):
            paramiko_proxyfix.close_idle(bad)
        assert not busy.closed
    finally:
        busy.close()


# -- a proxy's stderr ---------------------------------------------------------------


class _SlowHandler(logging.Handler):
    """A log handler that takes its time (a remote log shipper, a full disk)."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.05)


@pytest.fixture
def slow_logging() -> Iterator[None]:
    handler = _SlowHandler(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("paramiko_proxyfix", "paramiko")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


TRICKLE = shlex.join(
    [
        sys.executable,
        "-c",
        "import os, time\nwhile True:\n    os.write(2, b'x' * 100 + b'\\n')\n"
        "    time.sleep(0.001)\n",
    ]
)


def test_a_trickling_stderr_never_holds_recv_past_its_timeout(
    slow_logging: None,
) -> None:
    """0.2 drained stderr until it ran dry, logging each piece: a proxy that
    writes stderr steadily, with a slow log handler, held a recv() with a
    0.2 s timeout for over 3 s."""
    p = ProxyCommand(TRICKLE)
    try:
        time.sleep(0.3)  # a pipe's worth is waiting
        p.settimeout(0.2)
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(socket.timeout):
                p.recv(10)
            took = time.monotonic() - t0
            print(f"recv(timeout=0.2) took {took:.3f} s")
            assert took < 2.0, took  # 10x the timeout
    finally:
        t0 = time.monotonic()
        p.close()
        assert time.monotonic() - t0 < 5


def test_close_never_waits_on_a_stderr_someone_else_holds(tmp_path: Path) -> None:
    """A process the proxy started in a session of its own (out of reach of
    close()) keeps writing to the proxy's stderr: close() does not wait for
    that stderr to end."""
    pidfile = tmp_path / "writer.pid"
    script = (
        f"setsid sh -c 'echo $$ > {pidfile}; while :; do echo x >&2; sleep 0.01; "
        "done' & exec sleep 60"
    )
    p = ProxyCommand(shlex.join(["sh", "-c", script]))
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        writer = int(pidfile.read_text())
        t0 = time.monotonic()
        p.close()
        took = time.monotonic() - t0
        print(f"close() took {took:.3f} s")
        assert took < 5 * ProxyCommand.close_timeout + 1, took
        assert p.process.stderr.closed and p.process.returncode is not None
    finally:
        capped.kill_pids([writer])
        capped.wait_gone([writer], 5)


# -- secrets in what the fix shows -----------------------------------------------------

SECRET_COMMAND = (
    "{fake} -p hunter2 ssh -o ProxyPassword=s3cret -W db:22 "
    "http://deploy:t0psecret@bastion:8080"
)


@pytest.fixture
def fake_sshpass(tmp_path: Path) -> str:
    fake = tmp_path / "sshpass"
    fake.write_text("#!/bin/sh\necho 'denied for deploy' >&2\nexit 5\n")
    fake.chmod(0o755)
    return str(fake)


def test_log_lines_and_snapshots_hide_passwords(
    fake_sshpass: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The WARNING line for a proxy's end and the proxies() snapshot (which
    the fleet view sends over the broker) show ``***`` for password-like
    values; the exception keeps upstream's text."""
    caplog.set_level(logging.INFO, logger="paramiko_proxyfix")
    p = ProxyCommand(SECRET_COMMAND.format(fake=fake_sshpass))
    try:
        [snap] = [s for s in paramiko_proxyfix.proxies() if s["pid"] == p.process.pid]
        p.settimeout(10)
        with pytest.raises(paramiko_proxyfix.ProxyCommandExited) as info:
            p.recv(1)
    finally:
        p.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "paramiko_proxyfix"]
    [line] = [x for x in lines if "exited with status 5" in x]
    print(line)
    print(snap["command"])
    for shown in (line, json.dumps(snap)):
        for secret in ("hunter2", "s3cret", "t0psecret"):
            assert secret not in shown, shown
        assert "sshpass -p ***" in shown and "ProxyPassword=***" in shown, shown
        assert "http://deploy:***@bastion:8080" in shown, shown
    assert "denied for deploy" in line
    assert "hunter2" in info.value.command  # upstream's text, see docs/security.md


def test_log_lines_escape_what_the_proxy_wrote(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="paramiko_proxyfix")
    code = "import os, sys; os.write(2, b'\\x1b]0;owned\\x07 bad\\r\\n'); sys.exit(1)"
    p = ProxyCommand(shlex.join([sys.executable, "-c", code]))
    try:
        p.settimeout(10)
        with pytest.raises(paramiko_proxyfix.ProxyCommandExited):
            p.recv(1)
    finally:
        p.close()
    [line] = [
        r.getMessage()
        for r in caplog.records
        if "exited with status 1" in r.getMessage()
    ]
    assert "\x1b" not in line and "\\x1b]0;owned\\x07 bad" in line, line


# -- use after close, and uninstall() ----------------------------------------------


def test_after_close_send_raises_and_recv_sees_eof() -> None:
    p = ProxyCommand("cat")
    p.close()
    with pytest.raises(paramiko_proxyfix.ProxyCommandClosed) as info:
        p.send(b"late")
    assert isinstance(info.value, paramiko.SSHException)
    assert p.recv(10) == b""  # as a transport reading during its own shutdown
    assert p.closed and p._closed


def test_uninstall_pins_closed_too() -> None:
    """After uninstall(), a live instance keeps the fix's ``closed`` and
    ``_closed`` (upstream's read a returncode nothing updates)."""
    p = ProxyCommand("sleep 60")
    try:
        assert paramiko_proxyfix.uninstall()
        assert type(p).__name__ == "ProxyCommand" and isinstance(p, ProxyCommand)
        assert not p.closed
        os.kill(p.process.pid, 9)
        assert ended(p)
        assert p.closed and p._closed  # upstream's: process.returncode is None
        assert p.process.returncode is None
    finally:
        paramiko_proxyfix.install()
        p.close()
    assert p.process.returncode == -9
