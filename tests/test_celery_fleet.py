"""Issue 12 item 2: the fleet view through Celery's remote control.

Unit tests of the snapshot files and the proven-process signal, then the
real thing (tests/celery_app/fleet.py, in a capped child): two prefork
workers on one Redis, ``celery inspect proxyfix_proxies`` lists every proxy
of every pool process with its owner, and ``celery control
proxyfix_close_idle`` closes the idle ones and none of the busy ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

pytest.importorskip("celery", reason="Celery is not installed")

from paramiko_proxyfix import fleet, registry
from tests.celery_app.support import ssh_env
from tests.support import capped
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime / "paramiko_proxyfix"


def _child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


PUBLISHER = """
import sys, paramiko
import paramiko_proxyfix
from paramiko_proxyfix import fleet, registry
fleet.enable_publishing()
pc = paramiko.ProxyCommand("sleep 60")
print(pc.process.pid, flush=True)
sys.stdin.readline()
"""


def test_a_child_publishes_and_the_parent_reads_and_closes_its_proxy(
    run_dir: Path,
) -> None:
    child = _child(PUBLISHER)
    try:
        assert child.stdout is not None
        proxy = int(child.stdout.readline())
        assert (run_dir.stat().st_mode & 0o777) == 0o700
        report = fleet.report()
        pool = [p for p in report["processes"] if p["role"] == "pool"]
        assert [p["pid"] for p in pool] == [child.pid]
        [entry] = pool[0]["proxies"]
        assert entry["pid"] == proxy and entry["owner_pid"] == child.pid
        assert entry["state"] == "running" and pool[0]["stats"]["started"] == 1
        time.sleep(0.3)
        assert fleet.close_idle(60)["closed"] == 0
        answer = fleet.close_idle(0.2)
        assert answer["pool"] == 1, answer
        # Ended (a zombie until its owner's connection closes and reaps it).
        assert capped.wait_gone([proxy], timeout=5) == []
    finally:
        left = capped.descendants(child.pid)
        child.kill()
        child.wait(10)
        capped.kill_pids(left)


def test_the_counters_and_the_listener_the_fleet_view_relies_on() -> None:
    calls: list[int] = []
    registry.add_listener(lambda: calls.append(len(registry.live())))
    before = registry.stats()
    running = paramiko.ProxyCommand("sleep 60")
    [entry] = [e for e in registry.proxies() if e["pid"] == running.process.pid]
    assert entry["owner_pid"] == os.getpid() and 0 <= entry["age"] < 10
    assert entry["start_ticks"] == (fleet.proc_stat(entry["pid"]) or (0, 0))[1]
    done = paramiko.ProxyCommand("sh -c 'exit 3'")
    assert capped.wait_gone([done.process.pid], timeout=5) == []
    running.close()
    done.close()
    after = registry.stats()
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        "started": 2,
        "closed": 1,
        "ended_by_exit": 1,
        "ended_by_signal": 0,
        "killed_after_timeout": 0,
    }
    assert calls[-4:] == [1, 2, 1, 0]


def test_a_stale_file_is_discarded_and_a_forged_one_not_believed(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / f"{dead.pid}.json").write_text("{}")
    # A live child whose file claims another start time: a reused pid.
    child = _child("import sys; sys.stdin.readline()")
    try:
        forged = {"pid": child.pid, "start_ticks": 1, "stats": {}, "proxies": []}
        (run_dir / f"{child.pid}.json").write_text(json.dumps(forged))
        report = fleet.report()
        assert [p["role"] for p in report["processes"]] == ["main"]
        assert not (run_dir / f"{dead.pid}.json").exists()
    finally:
        child.kill()
        child.wait(10)


def test_terminate_refuses_a_process_that_is_not_the_recorded_one() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        ppid, start = fleet.proc_stat(proc.pid) or (0, 0)
        assert fleet.terminate(proc.pid, start + 1, ppid) is not None
        assert fleet.terminate(proc.pid, start, ppid + 1) is not None
        assert proc.poll() is None
        assert fleet.terminate(proc.pid, start, ppid) is None
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(10)


def test_two_workers_list_their_pool_proxies_and_close_the_idle_ones(
    sshd: Sshd,
) -> None:
    result = capped.run_capped("tests.celery_app.fleet:main", 130, ssh_env(sshd))
    lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines, (result.timed_out, result.stderr[-4000:])
    data: dict[str, Any] = json.loads(lines[-1])
    print(f"celery fleet: {json.dumps(data, indent=1)}")
    assert "error" not in data, (data, result.stderr[-4000:])

    for node in ("n1", "n2"):
        pool = data["pools"][node]
        assert len(pool) == 2, data["pools"]
        # inspect: both pool processes' proxies, owners proven through /proc
        reply = data["inspect"][node]
        assert reply["proxies"] == 2, reply
        assert data["owners_checked"][node] == pool, data["owners_checked"]
        for proc in reply["processes"]:
            for p in proc["proxies"]:
                assert p["state"] == "running" and p["bytes_in"] > 0, p
                assert p["command"].split()[1] == "-W", p
        # control: the idle one closed, the busy one kept running to its end
        assert data["close_idle"][node]["ok"]["closed"] == 1, data["close_idle"]
        busy = data["busy"][node]
        assert busy.get("last") == ["50"], busy
        after = data["after_close"][node]
        owners = [p["owner_pid"] for q in after["processes"] for p in q["proxies"]]
        assert owners == [busy["pid"]], after
        idle_pid = next(p for p in pool if p != busy["pid"])
        [idle] = [q for q in after["processes"] if q["pid"] == idle_pid]
        # Ended on its own as its owner saw it: ssh exits 255 on SIGTERM.
        ended = idle["stats"]["ended_by_exit"] + idle["stats"]["ended_by_signal"]
        assert ended == 1 and idle["stats"]["closed"] == 0, idle
    assert data["tasks_after_close"] == "8/8", data
    assert data["seconds"] < 100, data
