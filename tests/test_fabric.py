"""Fabric 3: a cached Connection recovers after its ``ssh -W`` gateway is killed.

Issue 3, point 6. A Connection kept in a module-level dict, as deploy workers
do, reconnects on its next use because its transport is no longer active.
Runs in a capped child against the real sshd, with and without the fix.
"""

from __future__ import annotations

import pytest

from tests.celery_app.support import scenario_report
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(150)

SCENARIO = """
import json, os, signal, time
import paramiko_proxyfix
from tests.celery_app.support import fabric_connection
from tests.support import capped

CONNECTIONS = {}  # as a worker keeps them: never closed between tasks

def connection():
    return CONNECTIONS.setdefault("target", fabric_connection())

TOOK = []  # seconds per command, for the report

def run(command):
    t0 = time.monotonic()
    try:
        # ~0.1 s each (a reconnect ~0.5 s): 30 s is headroom for a busy machine
        return connection().run(command, hide=True, timeout=30).stdout.strip()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"[:200]
    finally:
        TOOK.append(round(time.monotonic() - t0, 3))

first = run("echo first")
old = connection().transport.sock.process.pid
os.kill(old, signal.SIGKILL)
time.sleep(0.3)
busy = capped.cpu_share(os.getpid(), 1.0).report()
active = connection().transport.is_active()
after = [run(f"echo again-{i}") for i in range(3)]
new = connection().transport.sock.process.pid
report = {
    "installed": paramiko_proxyfix.is_installed(),
    "first": first, "cpu": busy, "active_after_kill": active, "after": after,
    "took": TOOK,
    "reconnected": new != old, "old_state": capped.proc_state(old),
}
connection().close()
report["zombies_after_close"] = capped.count_zombie_children()
report["proxy_left"] = capped.proc_state(new) not in (None, "Z")
print(json.dumps(report), flush=True)
"""


def _scenario(sshd: Sshd, fixed: bool) -> dict:
    data = scenario_report(sshd, SCENARIO, fixed, cap=120)
    print(f"fabric 3, fixed={fixed}: {data}")
    return data


def test_cached_connection_reconnects_after_its_proxy_is_killed(sshd: Sshd) -> None:
    data = _scenario(sshd, fixed=True)
    assert data["first"] == "first"
    assert data["after"] == ["again-0", "again-1", "again-2"]
    assert data["reconnected"] and not data["active_after_kill"]
    assert data["old_state"] is None, "the killed proxy was not reaped"
    assert data["cpu"]["cpu"] < 0.05, data  # at rest (load does not raise it)
    assert data["zombies_after_close"] == 0 and not data["proxy_left"]


def test_upstream_cached_connection_spins_and_fails(sshd: Sshd) -> None:
    data = _scenario(sshd, fixed=False)
    assert data["first"] == "first"
    assert all(a.startswith("error") for a in data["after"]), data["after"]
    assert data["active_after_kill"], "upstream noticed the dead proxy"
    # A full core when the machine is idle, less on a busy one: as much as a
    # busy loop got over the same second.
    assert data["cpu"]["ratio"] > 0.5, data
