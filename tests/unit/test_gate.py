"""The signalling gate, on real processes: what reaches whom, and what is refused.

signal_child() signals our own child, and with ``group`` the process group
it leads: through its pidfd (Linux 6.9+), or killpg() while a fresh waitid
shows the leader unreaped. pin() holds a process that is not our child by a
pidfd opened first, then checked (start time, parent). The gate's module
state (``group_through_pidfd``) is restored after each test (conftest.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from paramiko_proxyfix import gate, procfs
from tests.unit.procs import (
    PATIENCE,
    UNTIL_EOF,
    Procs,
    alive,
    exited,
    pidfd_signals_groups,
    stays_alive,
    ticks,
    wait_dead,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not gate.HAVE_PIDFD, reason="no pidfds here"),
]


@pytest.fixture
def pidfds() -> Iterator[Any]:
    """``pidfds(pid)``: a pidfd, closed after the test."""
    opened: list[int] = []

    def open_one(pid: int) -> int:
        fd = os.pidfd_open(pid)
        opened.append(fd)
        return fd

    yield open_one
    for fd in opened:
        os.close(fd)


@pytest.fixture
def pins() -> Iterator[list[gate.Pin]]:
    """Pins made by the test, released afterwards."""
    made: list[gate.Pin] = []
    yield made
    for p in made:
        p.close()


def group(procs: Procs) -> tuple[Any, int, int, int]:
    """A session leader with a grandchild in its group: (Popen, its start
    ticks, the grandchild's pid, the grandchild's start ticks)."""
    p, grandchild = procs.with_grandchild(start_new_session=True)
    return p, ticks(p.pid), grandchild, ticks(grandchild)


# -- signal_child ------------------------------------------------------------------


def test_signal_child_reaches_the_group(
    procs: Procs, pidfds: Any, group_path: str
) -> None:
    p, start, grandchild, g_start = group(procs)
    gate.signal_child(p.pid, pidfds(p.pid), signal.SIGTERM, True, start)
    assert p.wait(PATIENCE) == -signal.SIGTERM
    assert wait_dead(grandchild, g_start)


def test_signal_child_without_a_pidfd_reaches_the_group(procs: Procs) -> None:
    """Where there are no pidfds: kill() and killpg(), each while the start
    time matches and the leader is unreaped."""
    p, start, grandchild, g_start = group(procs)
    gate.signal_child(p.pid, None, signal.SIGTERM, True, start)
    assert p.wait(PATIENCE) == -signal.SIGTERM
    assert wait_dead(grandchild, g_start)


@pytest.mark.parametrize("pidfd", [True, False])
def test_signal_child_without_group_spares_the_group(
    procs: Procs, pidfds: Any, pidfd: bool, group_path: str
) -> None:
    p, start, grandchild, g_start = group(procs)
    fd = pidfds(p.pid) if pidfd else None
    gate.signal_child(p.pid, fd, signal.SIGTERM, False, start)
    assert p.wait(PATIENCE) == -signal.SIGTERM
    assert stays_alive(grandchild, g_start)


def test_signal_child_with_another_start_time_sends_nothing(procs: Procs) -> None:
    """Without a pidfd, the start time tells our child from a later process
    that got its number: a mismatch sends nothing."""
    p, start, grandchild, g_start = group(procs)
    gate.signal_child(p.pid, None, signal.SIGKILL, True, start + 1)
    assert stays_alive(p.pid, start)
    assert alive(grandchild, g_start)


def test_an_ended_child_is_proved_by_its_zombie_alone_without_a_pidfd(
    procs: Procs,
) -> None:
    """Seen ended, then reaped by someone else, its number taken by another
    child of ours within the same 10 ms tick (start times equal): without a
    pidfd only the zombie proves it. A running child with the number, start
    time and all, is spared."""
    p, start, grandchild, g_start = group(procs)  # runs: stands for the later one
    assert gate.unreaped(p.pid, None) and not gate.unreaped(p.pid, None, True)
    gate.signal_child(p.pid, None, signal.SIGKILL, True, start, ended=True)
    assert stays_alive(p.pid, start)
    assert alive(grandchild, g_start)
    p.stdin.close()
    assert exited(p.pid)  # now its zombie holds the number: that proves it
    assert gate.unreaped(p.pid, None, True)
    gate.signal_child(p.pid, None, signal.SIGKILL, True, start, ended=True)
    assert wait_dead(grandchild, g_start)


def test_signal_child_reaches_the_group_of_its_unreaped_zombie(
    procs: Procs, pidfds: Any, group_path: str
) -> None:
    p, start, grandchild, g_start = group(procs)
    fd = pidfds(p.pid)
    p.stdin.close()
    assert exited(p.pid)  # a zombie only we may collect: the number is its own
    gate.signal_child(p.pid, fd, signal.SIGKILL, True, start)
    assert wait_dead(grandchild, g_start)


def test_killpg_spares_the_group_once_someone_else_reaped_the_leader(
    procs: Procs, pidfds: Any
) -> None:
    """Once reaped, the group's number could be anyone's: killpg() is not used."""
    gate.group_through_pidfd = False
    p, start, grandchild, g_start = group(procs)
    fd = pidfds(p.pid)
    p.stdin.close()
    os.waitpid(p.pid, 0)
    gate.signal_child(p.pid, fd, signal.SIGKILL, True, start)
    gate.signal_child(p.pid, None, signal.SIGKILL, True, start)
    gate.signal_child(p.pid, None, signal.SIGKILL, True, None)
    assert stays_alive(grandchild, g_start)


@pytest.mark.skipif(not pidfd_signals_groups(), reason="kernel before 6.9")
def test_a_group_pidfd_names_the_group_the_leader_made(
    procs: Procs, pidfds: Any
) -> None:
    """Through the pidfd the group is the one the proxy created, whatever
    became of the number: it is still reached after the leader was reaped."""
    gate.group_through_pidfd = True
    p, start, grandchild, g_start = group(procs)
    fd = pidfds(p.pid)
    p.stdin.close()
    os.waitpid(p.pid, 0)
    gate.signal_child(p.pid, fd, signal.SIGKILL, True, start)
    assert wait_dead(grandchild, g_start)


def test_signal_child_of_a_process_already_gone_is_quiet(
    procs: Procs, pidfds: Any
) -> None:
    p = procs.sh(UNTIL_EOF)
    start = ticks(p.pid)
    fd = pidfds(p.pid)
    p.stdin.close()
    assert p.wait(PATIENCE) == 3
    for group_too in (True, False):
        gate.signal_child(p.pid, fd, signal.SIGTERM, group_too, start)
        gate.signal_child(p.pid, None, signal.SIGTERM, group_too, start)


def test_the_group_probe_is_asked_once_and_kept(procs: Procs, pidfds: Any) -> None:
    gate.group_through_pidfd = None
    p = procs.sleeper(start_new_session=True)
    gate.signal_child(p.pid, pidfds(p.pid), signal.SIGTERM, True, ticks(p.pid))
    assert isinstance(gate.group_through_pidfd, bool)
    assert p.wait(PATIENCE) == -signal.SIGTERM


# -- unreaped, open_pidfd ----------------------------------------------------------


def test_unreaped_follows_the_child(procs: Procs, pidfds: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    fd = pidfds(p.pid)
    assert gate.unreaped(p.pid, fd) and gate.unreaped(p.pid, None)
    p.stdin.close()
    assert exited(p.pid)
    assert gate.unreaped(p.pid, fd) and gate.unreaped(p.pid, None)  # a zombie
    assert p.wait(PATIENCE) == 3
    assert not gate.unreaped(p.pid, fd) and not gate.unreaped(p.pid, None)


def test_open_pidfd(procs: Procs) -> None:
    p = procs.sh(UNTIL_EOF)
    fd = gate.open_pidfd(p.pid)
    assert fd is not None
    os.close(fd)
    p.stdin.close()
    assert p.wait(PATIENCE) == 3
    assert gate.open_pidfd(p.pid) is None  # gone (and its number not reused)


# -- pin ---------------------------------------------------------------------------


def test_pin_holds_the_process_found(procs: Procs, pins: list[gate.Pin]) -> None:
    p = procs.sleeper()
    pinned = gate.pin(p.pid, ticks(p.pid), parents={os.getpid()})
    assert isinstance(pinned, gate.Pin)
    pins.append(pinned)
    assert pinned.pid == p.pid
    assert pinned.send(signal.SIGTERM) is None
    assert p.wait(PATIENCE) == -signal.SIGTERM
    assert pinned.send(signal.SIGTERM) == "already gone"  # reaped: never another
    pinned.close()
    assert pinned.pidfd is None
    assert pinned.send(signal.SIGTERM) == "already released"
    pinned.close()  # again: nothing to do


def test_pin_without_checks(procs: Procs, pins: list[gate.Pin]) -> None:
    p = procs.sleeper()
    pinned = gate.pin(p.pid, None)
    assert isinstance(pinned, gate.Pin)
    pins.append(pinned)


def test_pin_refuses_another_start_time(procs: Procs) -> None:
    p = procs.sleeper()
    why = gate.pin(p.pid, ticks(p.pid) + 1, parents={os.getpid()})
    assert why == "refused: its start time differs (not the process found)"
    assert stays_alive(p.pid, ticks(p.pid), 0.0)


def test_pin_refuses_another_parent(procs: Procs) -> None:
    p = procs.sleeper()
    why = gate.pin(p.pid, ticks(p.pid), parents={1, os.getpid() + 100000})
    assert why == f"refused: its parent is {os.getpid()}, not the one it was found with"


def test_pin_refuses_a_grandchild_after_its_parent_ended(procs: Procs) -> None:
    """What a proxy started is re-parented when the proxy ends: found as the
    proxy's child, it can no longer be proved to be one."""
    p, grandchild = procs.with_grandchild()
    g_start = ticks(grandchild)
    pinned = gate.pin(grandchild, g_start, parents={p.pid})
    assert isinstance(pinned, gate.Pin)
    pinned.close()
    p.stdin.close()
    assert p.wait(PATIENCE) == 3
    why = gate.pin(grandchild, g_start, parents={p.pid})
    assert isinstance(why, str) and why.startswith("refused: its parent is ")


def test_pin_refuses_a_zombie(procs: Procs) -> None:
    p = procs.sh(UNTIL_EOF)
    start = ticks(p.pid)
    p.stdin.close()
    assert exited(p.pid)
    assert gate.pin(p.pid, start) == "already gone"


def test_pin_refuses_a_process_gone(procs: Procs) -> None:
    p = procs.sh(UNTIL_EOF)
    start = ticks(p.pid)
    p.stdin.close()
    assert p.wait(PATIENCE) == 3
    assert gate.pin(p.pid, start) == "already gone"


def test_pin_refuses_with_a_proc_of_another_namespace(
    procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = procs.sleeper()
    monkeypatch.setattr(procfs, "is_ours", lambda root=procfs.PROC: False)
    assert gate.pin(p.pid, None) == "refused: /proc belongs to another pid namespace"


def test_pin_refuses_without_pidfds(
    procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = procs.sleeper()
    monkeypatch.setattr(gate, "_pidfd_open", None)
    assert gate.pin(p.pid, None) == "refused: no pidfd on this system"


def test_a_pin_on_someone_else_s_process_is_not_permitted(
    pins: list[gate.Pin],
) -> None:
    """Signal 0 to init: refused unless we may signal it (root), harmless."""
    pinned = gate.pin(1, None)
    if isinstance(pinned, str):
        pytest.skip(f"cannot pin init here: {pinned}")
    pins.append(pinned)
    may = os.geteuid() == 0 or os.stat("/proc/1").st_uid == os.geteuid()
    assert pinned.send(0) == (None if may else "not permitted")
