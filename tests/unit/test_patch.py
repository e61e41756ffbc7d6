"""install / uninstall / is_installed in this process, put back as they were.

Each test that uninstalls reinstalls before it ends (the rest of the suite
runs on the installed fix), and asserts no proxy is live meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import paramiko
import pytest
from paramiko import ssh_exception
from paramiko.packet import Packetizer
from paramiko.proxy import ProxyCommand

from paramiko_proxyfix import _patch, config, logs, registry
from paramiko_proxyfix.config import DISABLE_ENV
from paramiko_proxyfix.extras import ATTR
from paramiko_proxyfix.upstream import proxy as fix
from paramiko_proxyfix.upstream import ssh_exception as ours
from tests.unit.procs import PATIENCE

pytestmark = [pytest.mark.timeout(20), pytest.mark.unpatched]


@pytest.fixture
def uninstalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[Any, Any]]:
    """The fix taken out for the test (its originals given), then put back."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    assert _patch.is_installed()
    originals = dict(_patch._saved)
    assert _patch.uninstall()
    try:
        yield originals
    finally:
        monkeypatch.delenv(DISABLE_ENV, raising=False)
        assert _patch.install()
        assert _patch.is_installed()


def test_the_import_installed_the_fix() -> None:
    assert _patch.is_installed()
    assert not _patch.is_built_in()  # an unpatched paramiko, fixed in place
    assert _patch.unsupported_reason() is None
    assert _patch.unsupported_platform() is None
    recv, fixed = vars(ProxyCommand)["recv"], vars(fix.ProxyCommand)["recv"]
    # Its own, or one that picks it: an instance made before install() has a
    # class with a recv of its own (see pinning.py).
    assert recv is fixed or recv.__wrapped__ is fixed
    assert vars(ProxyCommand)["__init__"] is vars(fix.ProxyCommand)["__init__"]
    assert ProxyCommand.close_timeout == config.current().close_timeout
    assert logs._filter in logging.getLogger(logs.TRANSPORT_LOGGER).filters
    assert _patch.install() is True  # idempotent


def test_uninstall_puts_back_exactly_what_install_replaced(
    uninstalled: dict[Any, Any],
) -> None:
    assert not _patch.is_installed()
    assert not _patch.uninstall()  # nothing left to undo
    assert uninstalled
    for (obj, name), original in uninstalled.items():
        if original is _patch._MISSING:
            assert name not in vars(obj), (obj, name)
        else:
            assert vars(obj)[name] is original, (obj, name)
    assert not hasattr(ssh_exception, "ProxyCommandExited")
    assert not hasattr(paramiko, "ProxyCommandExited")
    assert ours.ProxyCommandExited.__module__ == ours.__name__
    assert "_proxyfix" not in vars(Packetizer)
    assert logs._filter not in logging.getLogger(logs.TRANSPORT_LOGGER).filters


def test_install_does_nothing_while_disabled(
    uninstalled: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert _patch.install() is False
    assert not _patch.is_installed()


def test_install_with_a_bad_disable_value_warns_and_installs(
    uninstalled: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DISABLE_ENV, "please")
    with pytest.warns(RuntimeWarning, match="the fix stays on"):
        assert _patch.install() is True
    assert _patch.is_installed()


def test_an_unsupported_paramiko_is_left_alone_with_a_warning(
    uninstalled: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = dict(vars(ProxyCommand))
    with monkeypatch.context() as patched:
        patched.setattr(_patch, "unsupported_reason", lambda: "paramiko 9.0 is odd")
        with pytest.warns(RuntimeWarning, match="9.0 is odd.*left unpatched"):
            assert _patch.install() is False
        assert dict(vars(ProxyCommand)) == before
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _patch.install(warn=False) is False


def test_a_live_proxy_keeps_the_fix_after_uninstall(
    open_proxy: Callable[[str], ProxyCommand],
) -> None:
    proxy = open_proxy("cat")
    assert _patch.uninstall()
    try:
        assert not _patch.is_installed()
        # moved to a subclass that keeps the fix's methods
        assert type(proxy) is not ProxyCommand
        assert isinstance(proxy, ProxyCommand)
        assert type(proxy).__name__ == "ProxyCommand"
        assert proxy.send(b"hi") == 2
        data = b""
        while len(data) < 2:
            data += proxy.recv(2 - len(data))
        assert data == b"hi"
        proxy.close()
        assert proxy.closed and proxy.process.returncode is not None
        assert registry.live() == []
    finally:
        assert _patch.install()


@pytest.mark.usefixtures("procs")  # for the full check of processes left
def test_a_proxy_made_before_install_keeps_upstream_behaviour() -> None:
    """The fix's public methods look at each instance: one made while
    uninstalled has no extras, and gets upstream's methods after install()."""
    assert _patch.uninstall()
    try:
        proxy = ProxyCommand("cat")
    finally:
        assert _patch.install()
    try:
        assert ATTR not in vars(proxy)
        assert proxy not in registry.live()
        assert proxy.send(b"hi") == 2
        assert proxy.recv(2) == b"hi"  # upstream's recv: all it asked for
        assert os.get_blocking(proxy.process.stdout.fileno())  # upstream's pipes
    finally:
        proxy.close()  # upstream's close: SIGTERM, nothing reaped
        assert proxy.process.wait(PATIENCE) == -signal.SIGTERM
        for pipe in (proxy.process.stdin, proxy.process.stdout, proxy.process.stderr):
            pipe.close()
