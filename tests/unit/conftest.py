"""Fixtures of the unit suite: processes ended after each test, settings restored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import Callable

import pytest
from paramiko.proxy import ProxyCommand

from paramiko_proxyfix import config, gate
from tests.support import capped
from tests.unit.procs import PATIENCE, Procs, pidfd_signals_groups


def _descendants() -> set[int]:
    """This process's living descendants, from /proc/PID/task/TID/children."""
    found: set[int] = set()
    stack = [os.getpid()]
    while stack:
        pid = stack.pop()
        for tid in _listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found.update(kids)
            stack += kids
    return {p for p in found if capped.proc_state(p) not in (None, "Z")}


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _pids() -> set[int]:
    return {int(name) for name in _listdir("/proc") if name.isdigit()}


def _has_token(pid: int) -> bool:
    """Whether ``pid`` carries this session's token (see capped.mark_session)."""
    needle = f"{capped.TOKEN_VAR}={os.environ.get(capped.TOKEN_VAR)}".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


_CHILDREN_FILES = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    """The session's leak check (tests/conftest.py), at a unit test's cost.

    The same rule and message: a test that leaves a process running fails,
    after the process is killed; orphans are found by the session's token.
    The session's check reads every process's stat and environment twice a
    test (about 50 ms on a busy machine, more than most unit tests take);
    this one reads this process's children files, and the environment only
    of processes that appeared during the test.
    """
    if not _CHILDREN_FILES or capped.TOKEN_VAR not in os.environ:
        before = set(capped.stray_processes())
        yield
        found = set(capped.stray_processes()) - before
    else:
        pids, ours = _pids(), _descendants()
        yield
        found = _descendants() - ours
        found |= {p for p in _pids() - pids if _has_token(p)}
        found = {p for p in found if capped.proc_state(p) not in (None, "Z")}
    found.discard(os.getpid())
    left = capped.wait_gone(found, timeout=3.0)
    if left:
        described = [f"{pid}: {capped.cmdline(pid)}" for pid in left]
        capped.kill_pids(left)
        pytest.fail("test left processes running:\n" + "\n".join(described))


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Start processes through this; whatever is left is killed and reaped."""
    started = Procs()
    try:
        yield started
    finally:
        started.cleanup()


@pytest.fixture(autouse=True)
def _restore_module_state() -> Iterator[None]:
    """Settings and the gate's group probe are as they were before each test."""
    settings = config.current()
    through = gate.group_through_pidfd
    try:
        yield
    finally:
        gate.group_through_pidfd = through
        if config.current() != settings:
            config.configure(**asdict(settings))


@pytest.fixture(params=["pidfd", "killpg"])
def group_path(request: pytest.FixtureRequest) -> str:
    """Each way a process group is signalled: through the leader's pidfd
    (Linux 6.9+), or killpg() while the leader is our unreaped child."""
    if not gate.HAVE_PIDFD:
        pytest.skip("no pidfds here")
    if request.param == "pidfd" and not pidfd_signals_groups():
        pytest.skip("this kernel cannot signal a group through a pidfd")
    gate.group_through_pidfd = request.param == "pidfd"  # restored after the test
    return str(request.param)


@pytest.fixture
def open_proxy() -> Iterator[Callable[[str], ProxyCommand]]:
    """``open_proxy(command_line)``: a ProxyCommand closed after the test."""
    made: list[ProxyCommand] = []

    def make(command_line: str) -> ProxyCommand:
        proxy = ProxyCommand(command_line)
        made.append(proxy)
        proxy.settimeout(PATIENCE)
        return proxy

    try:
        yield make
    finally:
        for proxy in made:
            proxy.close()
