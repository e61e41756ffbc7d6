"""Fixtures: a real sshd (session), an in-process SSH server, leak checks."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from tests.support import capped
from tests.support.fakeserver import FakeServer
from tests.support.sshd import MISSING_HINT, SSHD_BIN, Sshd

capped.mark_session()

# Fabric 1 (fabric3) needs paramiko 2.x and clashes with Fabric 3's package:
# its test runs in the `fabric1` tox env, which tests/run also runs. Elsewhere
# it is not collected at all, rather than reported as skipped.
try:
    _have_fabric1 = importlib.util.find_spec("fabric.api") is not None
except ImportError:
    _have_fabric1 = False
collect_ignore = [] if _have_fabric1 else ["test_fabric1.py"]
# The client libraries (netmiko, sshtunnel, scp, ansible-core) are installed
# by the `clients` tox env only, which tests/run also runs.
_CLIENTS = ("netmiko", "sshtunnel", "scp", "ansible")
if not all(importlib.util.find_spec(name) for name in _CLIENTS):
    collect_ignore.append("clients")


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """A real OpenSSH server on 127.0.0.1; fails (never skips) if not installed."""
    if not os.path.exists(SSHD_BIN):
        pytest.fail(MISSING_HINT, pytrace=False)
    server = Sshd().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """An in-process SSH server, stopped (threads joined) after the test."""
    server = FakeServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    """Fail a test that leaves processes behind (after killing them).

    Processes already ending get 3 s; zombies are not counted here (tests
    about reaping count them with capped.count_zombie_children()).
    """
    before = set(capped.stray_processes())
    yield
    left = capped.wait_gone(set(capped.stray_processes()) - before, timeout=3.0)
    if left:
        described = [f"{pid}: {capped.cmdline(pid)}" for pid in left]
        capped.kill_pids(left)
        pytest.fail("test left processes running:\n" + "\n".join(described))
