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
from paramiko_proxyfix import hooks
from paramiko_proxyfix.upstream import proxy as fix
from tests.support import REPO_ROOT, upstream_method

pytestmark = [pytest.mark.timeout(60), pytest.mark.unpatched]

MISSING = object()


def touched() -> list[object]:
    """Everything install() may change: the classes, the modules, the fix's
    exception classes."""
    import paramiko
    from paramiko import ssh_exception, util

    from paramiko_proxyfix.upstream import ssh_exception as fix_exceptions

    return [
        ProxyCommand,
        Packetizer,
        paramiko,
        ssh_exception,
        util,
        fix_exceptions.ProxyCommandExited,
        fix_exceptions.ProxyCommandClosed,
    ]


def snapshot() -> dict[tuple[int, str], object]:
    """Every attribute each touched object holds itself, by identity."""
    return {
        (i, name): value
        for i, obj in enumerate(touched())
        for name, value in vars(obj).items()
    }


def changes(a: dict, b: dict) -> set[tuple[int, str]]:
    return {
        k for k in a.keys() | b.keys() if a.get(k, MISSING) is not b.get(k, MISSING)
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


def holds_the_fix(name: str) -> bool:
    """ProxyCommand holds the fix's ``name`` itself, or (an instance made before
    install() has a class that defines its own) a method that picks it."""
    held, fixed = vars(ProxyCommand)[name], vars(fix.ProxyCommand)[name]
    if isinstance(held, property) and held is not fixed:
        held, fixed = held.fget, fixed.fget
    return held is fixed or getattr(held, "__wrapped__", None) is fixed


def test_import_installed_the_fix() -> None:
    assert paramiko_proxyfix.is_installed()
    assert holds_the_fix("recv")
    assert vars(ProxyCommand)["_spawn"] is hooks.EXTRAS["_spawn"]
    # In a fresh process (no instance made before): the fix's own methods.
    result = run_python(
        """
        from paramiko.proxy import ProxyCommand
        import paramiko_proxyfix
        from paramiko_proxyfix.upstream import proxy as fix
        for name in ("recv", "send", "close", "closed", "settimeout"):
            assert vars(ProxyCommand)[name] is vars(fix.ProxyCommand)[name], name
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_identity_before_during_after(restore_install: None) -> None:
    import paramiko
    from paramiko import ssh_exception

    paramiko_proxyfix.uninstall()
    before = snapshot()
    assert not paramiko_proxyfix.is_installed()
    assert paramiko_proxyfix.install() is True
    during = snapshot()
    changed = {name for _, name in changes(before, during)}
    # The fix's methods and attributes, the extras, the keepalive hook, the
    # exceptions (and where pickles find them): nothing else.
    fix_names = set(vars(fix.ProxyCommand)) - {"__module__", "__qualname__", "__doc__"}
    fix_names -= {"__dict__", "__weakref__"}
    # Packetizer's __init__ among the extras' names; paramiko.util's tb_strings.
    expected = fix_names | set(hooks.EXTRAS) | {"tb_strings"}
    expected |= {"ProxyCommandExited", "ProxyCommandClosed", "__module__"}
    assert changed == expected, changed ^ expected
    for name in hooks.EXTRAS:
        assert vars(ProxyCommand)[name] is hooks.EXTRAS[name], name
    assert vars(ProxyCommand)["__init__"] is vars(fix.ProxyCommand)["__init__"]
    assert ssh_exception.ProxyCommandExited is paramiko_proxyfix.ProxyCommandExited
    assert paramiko.ProxyCommandClosed is paramiko_proxyfix.ProxyCommandClosed
    assert paramiko_proxyfix.ProxyCommandExited.__module__ == "paramiko.ssh_exception"
    assert vars(Packetizer)["__init__"].__wrapped__ is before[(1, "__init__")]
    for name in ("recv", "send", "close", "closed"):
        assert holds_the_fix(name), name
    assert paramiko_proxyfix.uninstall() is True
    assert changes(before, snapshot()) == set()
    assert not hasattr(ssh_exception, "ProxyCommandExited")


def test_install_twice_never_saves_a_patched_original(restore_install: None) -> None:
    paramiko_proxyfix.uninstall()
    before = snapshot()
    for _ in range(3):
        assert paramiko_proxyfix.install() is True
    assert upstream_method(ProxyCommand, "recv") is before[(0, "recv")]
    paramiko_proxyfix.uninstall()
    assert paramiko_proxyfix.uninstall() is False
    assert changes(before, snapshot()) == set()


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
    assert changes(before, snapshot()) == set()
    paramiko_proxyfix.install()
    assert holds_the_fix("recv")


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


def test_instance_created_before_install_keeps_upstream_behaviour() -> None:
    """The fix's methods need the state its __init__ sets up: an instance made
    before install() keeps upstream's methods (and its bugs), working."""
    result = run_python(
        """
        import os, signal
        import paramiko
        import paramiko_proxyfix
        paramiko_proxyfix.uninstall()
        early = paramiko.ProxyCommand("cat")   # upstream __init__
        paramiko_proxyfix.install()
        late = paramiko.ProxyCommand("cat")
        for p in (early, late):
            p.settimeout(5)
            assert p.send(b"ping") == 4 and p.recv(4) == b"ping"
        assert "_proxyfix" not in vars(early) and "_proxyfix" in vars(late)
        early.close()                          # upstream's: SIGTERM only
        assert early.process.wait(5) == -signal.SIGTERM
        assert not early.process.stdout.closed  # upstream leaves the pipes
        late.close()
        assert late.process.returncode is not None and late.process.stdout.closed
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_instances_made_before_install_are_moved_and_given_back() -> None:
    """install() moves an instance made before it to a subclass of its class
    that picks upstream's methods for it, so that ProxyCommand itself can
    hold the fix's with no per-call look; uninstall() gives it back."""
    result = run_python(
        """
        import paramiko
        import paramiko_proxyfix
        from paramiko.proxy import ProxyCommand
        from paramiko_proxyfix.upstream import proxy as fix
        paramiko_proxyfix.uninstall()
        class Quiet(ProxyCommand):
            pass
        early, quiet = ProxyCommand("cat"), Quiet("cat")
        paramiko_proxyfix.install()
        for p, cls in ((early, ProxyCommand), (quiet, Quiet)):
            assert type(p) is not cls and type(p).__bases__ == (cls,)
            assert type(p).__name__ == cls.__name__ and isinstance(p, cls)
            p.settimeout(5)
            assert p.send(b"ping") == 4 and p.recv(4) == b"ping"
        for name in ("recv", "send", "close", "closed", "settimeout"):
            assert vars(ProxyCommand)[name] is vars(fix.ProxyCommand)[name]
        late = ProxyCommand("cat")
        assert type(late) is ProxyCommand
        paramiko_proxyfix.uninstall()
        assert type(early) is ProxyCommand and type(quiet) is Quiet
        assert type(late) is not ProxyCommand  # keeps the fix (its state)
        for p in (early, quiet, late):
            assert p.send(b"pong") == 4 and p.recv(4) == b"pong"
            p.close()
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_an_early_subclass_that_calls_super_keeps_working() -> None:
    """A subclass instance made before install() whose own recv calls
    ProxyCommand's reaches the class itself: it keeps methods that pick per
    instance, and both kinds of instance work."""
    result = run_python(
        """
        import paramiko
        import paramiko_proxyfix
        from paramiko.proxy import ProxyCommand
        from paramiko_proxyfix.upstream import proxy as fix
        paramiko_proxyfix.uninstall()
        class Counting(ProxyCommand):
            calls = 0
            def recv(self, size):
                Counting.calls += 1
                return super().recv(size)
        early = Counting("cat")
        paramiko_proxyfix.install()
        recv = vars(ProxyCommand)["recv"]
        assert recv is not vars(fix.ProxyCommand)["recv"]
        assert recv.__wrapped__ is vars(fix.ProxyCommand)["recv"]
        late = Counting("cat")
        for p in (early, late):
            p.settimeout(5)
            assert p.send(b"ping") == 4 and p.recv(4) == b"ping"
            p.close()
        assert Counting.calls == 2
        assert "_proxyfix" not in vars(early) and "_proxyfix" in vars(late)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_an_early_instance_that_cannot_be_moved_keeps_working() -> None:
    """A class install() cannot subclass (a metaclass that wants arguments):
    its early instance stays as it is, and ProxyCommand keeps methods that
    pick per instance, so both kinds still work; install() never fails."""
    result = run_python(
        """
        import logging
        import paramiko
        import paramiko_proxyfix
        from paramiko.proxy import ProxyCommand
        from paramiko_proxyfix.upstream import proxy as fix
        paramiko_proxyfix.uninstall()
        class Meta(type):
            def __new__(mcs, name, bases, ns, *, flavour):
                return super().__new__(mcs, name, bases, ns)
        class Odd(ProxyCommand, metaclass=Meta, flavour="plain"):
            pass
        early = Odd("cat")
        assert paramiko_proxyfix.install() is True
        assert type(early) is Odd
        assert vars(ProxyCommand)["recv"].__wrapped__ is vars(fix.ProxyCommand)["recv"]
        late = Odd("cat")
        for p in (early, late):
            p.settimeout(5)
            assert p.send(b"ping") == 4 and p.recv(4) == b"ping"
        assert "_proxyfix" not in vars(early) and "_proxyfix" in vars(late)
        logging.basicConfig()
        assert paramiko_proxyfix.uninstall() is True  # said, never raised
        late.close()
        early.close()
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "an open Odd cannot keep the fix's methods" in result.stderr
