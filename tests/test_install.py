"""install() / uninstall(): what they change, and nothing more."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
from paramiko.packet import Packetizer
from paramiko.proxy import ProxyCommand

import paramiko_proxyfix
from paramiko_proxyfix import _patch
from paramiko_proxyfix.fixed import FixedProxyCommand
from tests.support import REPO_ROOT, upstream_method

pytestmark = pytest.mark.timeout(60)

PATCHED = {
    ProxyCommand: (*_patch.PROXY_METHODS, *_patch.PROXY_ADDED),
    Packetizer: ("_check_keepalive",),
}


MISSING = object()


def snapshot() -> dict[tuple[type, str], object]:
    return {
        (cls, name): vars(cls).get(name, MISSING)
        for cls, names in PATCHED.items()
        for name in names
    }


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter: import order matters here."""
    import os

    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    full_env.pop("PARAMIKO_PROXYFIX_DISABLE", None)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env,
    )


@pytest.fixture
def restore_install():
    yield
    paramiko_proxyfix.install()


def test_import_installed_the_fix() -> None:
    assert paramiko_proxyfix.is_installed()
    assert vars(ProxyCommand)["recv"] is vars(FixedProxyCommand)["recv"]


def test_identity_before_during_after(restore_install: None) -> None:
    paramiko_proxyfix.uninstall()
    before = snapshot()
    assert not paramiko_proxyfix.is_installed()
    assert paramiko_proxyfix.install() is True
    during = snapshot()
    ours = vars(FixedProxyCommand)
    for (cls, name), value in during.items():
        assert value is not before[(cls, name)], name
        if cls is ProxyCommand:
            assert value is ours[name], name
    assert (
        during[(Packetizer, "_check_keepalive")].__wrapped__
        is before[(Packetizer, "_check_keepalive")]
    )
    assert paramiko_proxyfix.uninstall() is True
    after = snapshot()
    for key, value in after.items():
        assert value is before[key], key
    assert before[(ProxyCommand, "gettimeout")] is MISSING


def test_install_twice_never_saves_a_patched_original(restore_install: None) -> None:
    paramiko_proxyfix.uninstall()
    before = snapshot()
    for _ in range(3):
        assert paramiko_proxyfix.install() is True
    assert upstream_method(ProxyCommand, "recv") is before[(ProxyCommand, "recv")]
    paramiko_proxyfix.uninstall()
    assert paramiko_proxyfix.uninstall() is False
    assert snapshot() == before


def test_concurrent_install_uninstall_stays_consistent(restore_install: None) -> None:
    paramiko_proxyfix.uninstall()
    before = snapshot()
    barrier = threading.Barrier(16)

    def churn(i: int) -> None:
        barrier.wait()
        for _ in range(200):
            if i % 2:
                paramiko_proxyfix.install()
            else:
                paramiko_proxyfix.uninstall()

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    paramiko_proxyfix.uninstall()
    assert snapshot() == before
    paramiko_proxyfix.install()
    assert vars(ProxyCommand)["recv"] is vars(FixedProxyCommand)["recv"]


def test_disable_env_makes_import_a_no_op() -> None:
    result = run_python(
        """
        from paramiko.proxy import ProxyCommand
        recv = ProxyCommand.recv
        import paramiko_proxyfix
        assert not paramiko_proxyfix.is_installed()
        assert ProxyCommand.recv is recv
        assert paramiko_proxyfix.install() is False  # the operator's word wins
        print("untouched")
        """,
        PARAMIKO_PROXYFIX_DISABLE="1",
    )
    assert result.returncode == 0, result.stderr
    assert "untouched" in result.stdout


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (
            "paramiko.__version_info__ = (2, 11, 0); paramiko.__version__ = '2.11.0'",
            "paramiko 2.11.0 is not supported",
        ),
        (
            "paramiko.__version_info__ = (6, 0, 0); paramiko.__version__ = '6.0.0'",
            "paramiko 6.0.0 is not supported",
        ),
        ("del ProxyCommand.settimeout", "missing: settimeout"),
        ("del Packetizer._check_keepalive", "missing: Packetizer._check_keepalive"),
    ],
)
def test_unknown_paramiko_shape_warns_and_patches_nothing(
    breakage: str, expected: str
) -> None:
    result = run_python(
        f"""
        import warnings
        import paramiko
        from paramiko.proxy import ProxyCommand
        from paramiko.packet import Packetizer
        {breakage}
        before = dict(vars(ProxyCommand)), dict(vars(Packetizer))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import paramiko_proxyfix
        assert not paramiko_proxyfix.is_installed()
        assert (dict(vars(ProxyCommand)), dict(vars(Packetizer))) == before
        print(caught[0].message)
        """
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert "supported: paramiko >= 2.12, < 6.0" in result.stdout
    assert "left unpatched" in result.stdout


def test_instance_created_before_install_gets_the_fix() -> None:
    result = run_python(
        """
        import os, signal, time
        import paramiko
        from paramiko_proxyfix import _patch  # imports the package: installs
        import paramiko_proxyfix
        paramiko_proxyfix.uninstall()
        early = paramiko.ProxyCommand("cat")   # upstream __init__
        paramiko_proxyfix.install()
        early.settimeout(5)
        assert early.send(b"ping") == 4 and early.recv(4) == b"ping"
        os.kill(early.process.pid, signal.SIGKILL)
        t = time.monotonic()
        try:
            early.recv(10)
        except paramiko_proxyfix.ProxyCommandExited as exc:
            print("raised", exc.signal_name, round(time.monotonic() - t, 3))
        early.close()
        assert early.process.returncode == -9 and early.process.stdout.closed
        print("reaped")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "raised SIGKILL" in result.stdout
    assert "reaped" in result.stdout
