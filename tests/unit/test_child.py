"""ProxyChild: every state and every move between them, on real processes.

    running --(exit seen, not reaped)--> ended --(finish/reap)--> reaped
    running, ended --(someone else reaped it)--> lost
    any --(inherited by fork)--> foreign

The children are ``sh`` and ``sleep``: a few milliseconds each. "Sends
nothing" is proved on a process the signal would kill (it is alive 0.3 s
later) and by counting every signal that reaches the gate.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from paramiko_proxyfix import child, gate, procfs
from paramiko_proxyfix.child import ENDED, FOREIGN, LOST, REAPED, RUNNING, ProxyChild
from tests.unit.procs import (
    PATIENCE,
    UNTIL_EOF,
    Procs,
    alive,
    exited,
    stays_alive,
    ticks,
    wait_dead,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not child._HAVE_WAITID, reason="no waitid(WNOWAIT) here"),
]


@pytest.fixture
def children() -> Any:
    """ProxyChild objects made by the test; their pidfds closed afterwards."""
    made: list[ProxyChild] = []

    def make(process: Any, own_group: bool = False) -> ProxyChild:
        c = ProxyChild(process, own_group)
        made.append(c)
        return c

    yield make
    for c in made:
        fd, c.pidfd = c.pidfd, None
        if fd is not None:
            os.close(fd)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every signal the gate is asked to send, or sends, during the test."""
    calls: list[tuple[Any, ...]] = []
    signal_child, pin, send = gate.signal_child, gate.pin, gate._send

    def spy_signal_child(*args: Any) -> None:
        calls.append(("signal_child", *args))
        signal_child(*args)

    def spy_pin(*args: Any, **kwargs: Any) -> Any:
        calls.append(("pin", *args))
        return pin(*args, **kwargs)

    def spy_send(*args: Any) -> None:
        calls.append(("pidfd_send_signal", *args))
        assert send is not None
        send(*args)

    monkeypatch.setattr(gate, "signal_child", spy_signal_child)
    monkeypatch.setattr(gate, "pin", spy_pin)
    if send is not None:
        monkeypatch.setattr(gate, "_send", spy_send)
    return calls


def close_stdin(p: Any) -> None:
    p.stdin.close()


# -- running -> ended -> reaped --------------------------------------------------


def test_a_new_child_is_running(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    assert c.state == RUNNING
    assert c.pid == p.pid and c.owner_pid == os.getpid()
    assert c.returncode is None and c.status_known and not c.killed
    assert c.poll() is None
    assert c.start_ticks == ticks(p.pid)
    assert (c.pidfd is not None) == gate.HAVE_PIDFD
    assert not c.own_group and children(p, True).own_group


def test_running_to_ended_leaves_the_zombie(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    assert c.state == ENDED
    assert (c.returncode, c.status_known) == (3, True)
    # Not reaped: the pid, and its group number, are still its own.
    info = procfs.stat(p.pid)
    assert info is not None and info.state == "Z"
    assert p.returncode is None
    assert gate.unreaped(p.pid, c.pidfd)
    assert c.poll() == 3 and c.state == ENDED  # asking again changes nothing


def test_ended_to_reaped_by_finish(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    c.finish()
    assert c.state == REAPED
    assert (c.returncode, c.status_known) == (3, True)
    assert procfs.stat(p.pid) is None  # collected
    assert p.returncode == 3  # and Popen knows: it never waits on that pid
    assert c.pidfd is None
    c.finish()  # again: nothing left to do
    assert c.state == REAPED and c.poll() == 3


def test_ended_to_reaped_by_reap(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    c.reap()
    assert (c.state, c.returncode, c.status_known) == (REAPED, 3, True)
    assert procfs.stat(p.pid) is None and p.returncode == 3


def test_ended_by_a_signal_has_a_negative_status(procs: Procs, children: Any) -> None:
    p = procs.sleeper()
    c = children(p)
    c.signal(signal.SIGTERM)
    assert c.wait(PATIENCE) == -signal.SIGTERM
    assert c.state == ENDED and not c.killed
    c.finish()
    assert (c.state, c.returncode, p.returncode) == (REAPED, -15, -15)


def test_sigkill_marks_the_child_killed(procs: Procs, children: Any) -> None:
    p = procs.sleeper()
    c = children(p)
    c.signal(signal.SIGKILL)
    assert c.wait(PATIENCE) == -signal.SIGKILL
    assert c.killed


def test_reap_does_nothing_while_it_runs(procs: Procs, children: Any) -> None:
    p = procs.sleeper()
    c = children(p)
    c.reap()
    assert c.state == RUNNING and alive(p.pid, c.start_ticks)


# -- running / ended -> lost: someone else reaped it -----------------------------


def test_running_to_lost_when_someone_else_reaps_it(
    procs: Procs, children: Any
) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert os.waitpid(p.pid, 0)[0] == p.pid  # a SIGCHLD handler, os.wait()...
    assert c.poll() == 0  # unknown: 0, as CPython reports it
    assert (c.state, c.returncode, c.status_known) == (LOST, 0, False)
    assert p.returncode == 0  # Popen never waits on that pid again
    c.finish()
    assert c.state == LOST


def test_running_to_lost_when_popen_reaped_it(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert p.wait(PATIENCE) == 3  # a caller's process.wait()
    assert c.poll() == 3  # Popen's status
    assert (c.state, c.returncode, c.status_known) == (LOST, 3, True)


def test_ended_to_lost_when_popen_reaped_it(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    assert p.poll() == 3  # reaped behind its back
    c.reap()
    assert (c.state, c.returncode, c.status_known) == (LOST, 3, True)


def test_ended_to_lost_keeps_the_status_it_saw(procs: Procs, children: Any) -> None:
    """The status was seen (ended, 3) before someone else reaped the zombie:
    it is known, so ``status_known`` stays true ("False when someone else
    reaped it and the status was not recorded")."""
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    assert os.waitpid(p.pid, 0)[0] == p.pid
    c.reap()
    assert c.state == LOST
    assert c.returncode == 3
    assert c.status_known


# -- any -> foreign ----------------------------------------------------------------


def test_running_to_foreign(procs: Procs, children: Any, sent: list[Any]) -> None:
    p = procs.sleeper()
    c = children(p)
    had_pidfd = c.pidfd is not None
    c.release_inherited()
    assert c.state == FOREIGN and c.pidfd is None
    assert c.poll() == 0  # never waits for the parent's proxy
    started = time.monotonic()
    assert c.wait(PATIENCE) == 0
    assert time.monotonic() - started < PATIENCE / 2
    c.signal(signal.SIGKILL)
    c.finish()
    assert c.state == FOREIGN
    assert sent == []
    assert stays_alive(p.pid, c.start_ticks)
    assert had_pidfd == gate.HAVE_PIDFD


def test_ended_to_foreign_keeps_the_status_seen(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    c.release_inherited()
    assert c.state == FOREIGN and c.poll() == 3
    c.finish()  # never reaps the parent's child
    info = procfs.stat(p.pid)
    assert info is not None and info.state == "Z"


# -- no signal after lost, reaped, foreign ----------------------------------------


def _group_child(procs: Procs, children: Any) -> tuple[Any, ProxyChild, int, int]:
    p, grandchild = procs.with_grandchild(start_new_session=True)
    c = children(p, True)
    return p, c, grandchild, ticks(grandchild)


def test_no_signal_after_lost(
    procs: Procs, children: Any, sent: list[Any], group_path: str
) -> None:
    """Its group number may be anyone's once someone else reaped the leader:
    the grandchild, still in that group, is not signalled."""
    p, c, grandchild, start = _group_child(procs, children)
    close_stdin(p)
    os.waitpid(p.pid, 0)
    assert c.poll() == 0 and c.state == LOST
    c.signal(signal.SIGKILL)
    c.signal(signal.SIGTERM)
    assert sent == []
    assert stays_alive(grandchild, start)
    assert not c.killed


def test_no_signal_after_reaped(
    procs: Procs, children: Any, sent: list[Any], group_path: str
) -> None:
    p, c, grandchild, start = _group_child(procs, children)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    c.reap()
    assert c.state == REAPED
    c.signal(signal.SIGKILL)
    assert sent == []
    assert stays_alive(grandchild, start)


def test_no_signal_after_foreign(
    procs: Procs, children: Any, sent: list[Any], group_path: str
) -> None:
    p, c, grandchild, start = _group_child(procs, children)
    c.release_inherited()
    c.signal(signal.SIGKILL)
    c.signal(signal.SIGTERM)
    c.finish()
    assert sent == []
    assert stays_alive(p.pid, c.start_ticks)
    assert alive(grandchild, start)


def test_no_signal_after_finish(procs: Procs, children: Any, sent: list[Any]) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    c.finish()
    del sent[:]
    c.signal(signal.SIGKILL)
    assert sent == []


# -- signalling what it started ----------------------------------------------------


def test_signal_reaches_its_group_while_running(
    procs: Procs, children: Any, group_path: str
) -> None:
    p, c, grandchild, start = _group_child(procs, children)
    c.signal(signal.SIGTERM)
    assert c.wait(PATIENCE) == -signal.SIGTERM
    assert wait_dead(grandchild, start)


def test_signal_reaches_its_group_while_its_zombie_holds_the_number(
    procs: Procs, children: Any, group_path: str
) -> None:
    p, c, grandchild, start = _group_child(procs, children)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3 and c.state == ENDED
    assert alive(grandchild, start)  # ending the leader ends nothing else
    c.signal(signal.SIGKILL)
    assert wait_dead(grandchild, start)
    assert not c.killed  # it had ended already: not a kill for the counters


def test_finish_ends_its_group_then_reaps(
    procs: Procs, children: Any, group_path: str
) -> None:
    p, c, grandchild, start = _group_child(procs, children)
    close_stdin(p)
    assert c.wait(PATIENCE) == 3
    c.finish()
    assert wait_dead(grandchild, start)
    assert c.state == REAPED and procfs.stat(p.pid) is None


@pytest.mark.skipif(not gate.HAVE_PIDFD, reason="pins need pidfds")
def test_signal_without_a_group_reaches_its_descendants(
    procs: Procs, children: Any
) -> None:
    """In our own session (a terminal): the child and what /proc shows it
    started, each pinned, never our process group."""
    p, grandchild = procs.with_grandchild()
    start = ticks(grandchild)
    c = children(p, False)
    c.signal(signal.SIGTERM)
    assert c.wait(PATIENCE) == -signal.SIGTERM
    assert wait_dead(grandchild, start)


# -- wait(timeout) ---------------------------------------------------------------


@pytest.mark.parametrize("watch", ["pidfd", "sleeping"])
def test_wait_returns_within_its_timeout_while_running(
    procs: Procs, children: Any, monkeypatch: pytest.MonkeyPatch, watch: str
) -> None:
    p = procs.sleeper()
    c = children(p)
    if watch == "sleeping":  # eventlet removes select.poll
        monkeypatch.delattr("select.poll")
    for timeout in (0.05, 0.2):
        started = time.monotonic()
        assert c.wait(timeout) is None
        took = time.monotonic() - started
        assert timeout <= took < timeout + 2.0
    started = time.monotonic()
    assert c.wait(0) is None and c.wait(-1) is None
    assert time.monotonic() - started < 1.0
    assert c.state == RUNNING


@pytest.mark.parametrize("watch", ["pidfd", "sleeping"])
def test_wait_returns_when_the_child_ends(
    procs: Procs, children: Any, monkeypatch: pytest.MonkeyPatch, watch: str
) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    if watch == "sleeping":
        monkeypatch.delattr("select.poll")
    timer = threading.Timer(0.05, close_stdin, (p,))
    timer.start()
    try:
        started = time.monotonic()
        assert c.wait(PATIENCE) == 3
        assert time.monotonic() - started < PATIENCE / 2
    finally:
        timer.join()


def test_wait_returns_at_once_after_the_end(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    close_stdin(p)
    assert exited(p.pid)
    started = time.monotonic()
    assert c.wait(30) == 3
    assert c.wait(30) == 3
    c.finish()
    assert c.wait(30) == 3
    assert time.monotonic() - started < 1.0


def test_wait_without_a_pidfd(procs: Procs, children: Any) -> None:
    p = procs.sh(UNTIL_EOF)
    c = children(p)
    fd, c.pidfd = c.pidfd, None  # as where pidfds do not exist: waitid(P_PID)
    try:
        assert c.wait(0.05) is None
        close_stdin(p)
        assert c.wait(PATIENCE) == 3
        c.finish()
        assert c.state == REAPED and procfs.stat(p.pid) is None
    finally:
        if fd is not None:
            os.close(fd)
