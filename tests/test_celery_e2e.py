"""Celery integration: the signal handlers, and the worker end to end.

Issue 3, point 5 and the end-to-end test: redis on loopback, a real
``celery worker --pool=prefork --concurrency=2`` whose tasks use Fabric 3
with ``gateway="ssh -W ..."`` against the real sshd. The scenario
(tests/celery_app/scenario.py) runs in a capped child, once with the fix and
once with PARAMIKO_PROXYFIX_DISABLE=1 to show what it detects.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("celery", reason="Celery is not installed")

from celery import signals
from paramiko.proxy import ProxyCommand

import paramiko_proxyfix
import paramiko_proxyfix.celery as pfx_celery
from paramiko_proxyfix import ProxyCommandForeign, config, fleet, registry
from paramiko_proxyfix.extras import extras_of
from tests.celery_app.support import ssh_env
from tests.support import STUBBORN, capped, wait_until
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(120)


def _receivers(celery_signal: Any) -> list[Any]:
    return [r for r in celery_signal.receivers if "paramiko_proxyfix" in str(r[0])]


def test_import_connects_each_worker_signal_once() -> None:
    pfx_celery.connect()  # again: must not add a second receiver
    for celery_signal in (
        signals.worker_init,
        signals.worker_process_init,
        signals.worker_process_shutdown,
        signals.worker_shutdown,
    ):
        assert len(_receivers(celery_signal)) == 1, celery_signal.name


def test_shutdown_handler_closes_everything_inside_billiards_window() -> None:
    made = [ProxyCommand(STUBBORN) for _ in range(3)]
    for p in made:
        p.settimeout(10)
        assert p.recv(5) == b"ready"
    t0 = time.monotonic()
    signals.worker_process_shutdown.send(sender="test", pid=0, exitcode=0)
    took = time.monotonic() - t0
    print(f"worker_process_shutdown with 3 proxies ignoring SIGTERM: {took:.3f} s")
    assert all(capped.proc_state(p.process.pid) is None for p in made)
    # 0.1 s on a quiet machine; a loaded one takes longer to kill and reap
    assert took < 0.05 + max(0.05, 10 * capped.kill_and_reap_now(3)), took


class _App:
    def __init__(self, **conf: Any) -> None:
        self.conf = conf


@pytest.fixture
def idle_reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv(config.IDLE_ENV, raising=False)
    yield monkeypatch
    registry.set_idle_timeout(None)


def test_pool_process_init_releases_what_the_parent_left(idle_reset: Any) -> None:
    """The fork hook has done it already; the signal makes sure, signalling nothing."""
    pc = ProxyCommand("sleep 60")  # ignores stdin: only a signal would end it
    # As if inherited from another process: its fix and its extras say so.
    pc._pid = 1
    extras = extras_of(pc)
    assert extras is not None
    extras.child.owner_pid = 1
    try:
        signals.worker_process_init.send(sender="test")
        assert paramiko_proxyfix.proxies() == []
        with pytest.raises(ProxyCommandForeign, match="belongs to process 1"):
            pc.recv(1)
        # Not signalled: it goes to sleep (S). A signalled one dies (Z) the
        # first time it runs; on a loaded machine a fresh one may still be R.
        pid = pc.process.pid
        wait_until(lambda: capped.proc_state(pid) in ("S", "Z", None), 30)
        assert capped.proc_state(pid) == "S"
    finally:
        os.kill(pc.process.pid, signal.SIGKILL)  # Popen now refuses to signal it
        os.waitpid(pc.process.pid, 0)
        # The signal made this process a publisher (a pool process): not for
        # the rest of the session, whose tests write to run dirs of their own.
        fleet.withdraw()
        assert fleet._publisher_pid == 0


def test_idle_timeout_comes_from_the_celery_setting(idle_reset: Any) -> None:
    worker = type("Worker", (), {"app": _App(paramiko_proxyfix_idle_timeout=300)})
    signals.worker_init.send(sender=worker)
    assert registry._idle_timeout == 300


def test_the_environment_wins_over_the_celery_setting(idle_reset: Any) -> None:
    idle_reset.setenv(config.IDLE_ENV, "0")  # an operator switches it off
    worker = type("Worker", (), {"app": _App(paramiko_proxyfix_idle_timeout=300)})
    signals.worker_init.send(sender=worker)
    assert registry._idle_timeout == 0  # never


def _e2e(sshd: Sshd, mode: str, cap: float) -> dict[str, Any]:
    env = {**ssh_env(sshd), "PFX_E2E_MODE": mode}
    result = capped.run_capped("tests.celery_app.scenario:main", cap, env)
    lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines, (result.timed_out, result.stderr[-4000:])
    data: dict[str, Any] = json.loads(lines[-1])
    print(f"celery e2e ({mode}): {json.dumps(data, indent=1)}")
    assert "error" not in data, (data, result.stderr[-4000:])
    return data


@pytest.mark.timeout(240)
def test_prefork_worker_end_to_end(sshd: Sshd) -> None:
    # 16-21 s with two CPU hogs per core: a cap of 10x that
    data = _e2e(sshd, "fixed", cap=200)
    # 1. tasks succeed, one cached connection per pool process
    assert data["pool_processes_with_a_proxy"] == 2, data
    assert data["tasks_ok_before"].split("/")[0] == data["tasks_ok_before"][2:]
    # 2. every ssh -W killed: the worker idles and the next tasks reconnect
    assert data["proxies_killed"] == 2, data
    # at rest (load does not raise it)
    assert data["worker_cpu_after_kill"]["cpu"] < 0.1, data
    assert data["tasks_recovered"] == "8/8", data
    assert data["zombies_after_kill"] == 0, data
    # 3. a hard time limit mid-command orphans no proxy
    assert data["time_limit"] == "TimeLimitExceeded", data
    assert data["orphaned_proxies_after_time_limit"] == 0, data
    assert data["tasks_ok_after_time_limit"] == "2/2", data
    # 4. warm shutdown leaves no proxy and no zombie
    assert data["proxies_left_after_shutdown"] == 0, data
    assert data["zombies_after_shutdown"] == 0, data


@pytest.mark.timeout(180)
def test_prefork_worker_without_the_fix_burns_cpu_and_fails(sshd: Sshd) -> None:
    data = _e2e(sshd, "upstream", cap=120)  # 8-12 s with two CPU hogs per core
    assert data["proxies_killed"] == 2, data
    assert data["tasks_recovered"] == "0/8", data
    # Two spinning transports: ~2 cores on an idle machine, less on a busy one;
    # at least half what a busy loop got over the same window. (The pool
    # shares the worker's session, so with autogroup scheduling both spinners
    # together get one session's share: a ratio of ~1, not 2.)
    assert data["worker_cpu_after_kill"]["ratio"] > 0.5, data


def test_plain_import_after_celery_connects_the_signals() -> None:
    code = (
        "import celery, paramiko_proxyfix\n"
        "from celery import signals\n"
        "print(sum('paramiko_proxyfix' in str(r[0])"
        " for r in signals.worker_process_shutdown.receivers))\n"
    )
    result = capped.run_capped(code, 30)
    assert result.stdout.strip() == "1", result.stderr
