"""The fleet view end to end: ``main()`` runs capped and prints one JSON line.

Two prefork workers (nodes n1 and n2, 2 pool processes each, each node also
on a queue of its own) on one Redis. Every pool process caches a Fabric
connection through ``ssh -W``; one per node is then kept busy by a remote
loop that prints every 0.3 s while the other idles. The real ``celery
inspect proxyfix_proxies --json`` and ``celery control proxyfix_close_idle``
CLIs list them and close the idle ones; tasks afterwards reconnect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.celery_app.scenario import (
    _become_subreaper,
    _cleanup,
    _ppid,
    exit_now,
    pool,
    start_redis,
    start_worker,
)
from tests.support import REPO_ROOT

NODES = ("n1", "n2")
#: Prints for 15 s: never idle for long, and still running after the close.
BUSY = "for i in $(seq 50); do echo $i; sleep 0.3; done"
IDLE_SECONDS = 3.0


def celery_cli(*args: str) -> Any:
    """Run ``celery -A tests.celery_app.app ARGS --json``; its JSON reply."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.celery_app.app", *args]
        + ["--json", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO_ROOT),
        check=False,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith(("{", "["))]
    if not lines:
        raise RuntimeError(f"celery {args}: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def on_node(task: Any, node: str, commands: list[str], timeout: float) -> list[Any]:
    pending = [task.apply_async((c,), queue=node) for c in commands]
    outs = []
    for result in pending:
        try:
            outs.append(result.get(timeout=timeout))
        except Exception as exc:
            outs.append({"error": f"{type(exc).__name__}: {exc}"[:300]})
    return outs


def by_node(replies: Any) -> dict[str, Any]:
    """{"n1": reply, ...} from the CLI's dict or broadcast's list of dicts."""
    if isinstance(replies, list):
        replies = {k: v for r in replies for k, v in r.items()}
    return {name.split("@")[0]: reply for name, reply in replies.items()}


def scenario(task: Any, app: Any, workers: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    pools = {}
    for node, worker in workers.items():
        pools[node] = sorted(pool(worker.pid))
        for _ in range(5):  # until both pool processes hold a connection
            outs = on_node(task, node, ["sleep 0.4; echo warm"] * 4, 30)
            if {o.get("pid") for o in outs} >= set(pools[node]):
                break
    figures["pools"] = pools
    figures["worker_pids"] = {n: w.pid for n, w in workers.items()}

    time.sleep(1.5)
    busy = {n: task.apply_async((BUSY,), queue=n) for n in NODES}
    time.sleep(2.5)

    # The raw CLI replies too: docs/celery.md shows them.
    figures["inspect_cli"] = celery_cli("inspect", "proxyfix_proxies")
    listed = figures["inspect"] = by_node(figures["inspect_cli"])
    # Every proxy's owner is a pool process of that node, per /proc.
    figures["owners_checked"] = {
        n: sorted(
            p["owner_pid"]
            for proc in reply["processes"]
            for p in proc["proxies"]
            if _ppid(p["pid"]) == p["owner_pid"]
            and _ppid(p["owner_pid"]) == workers[n].pid
        )
        for n, reply in listed.items()
    }

    figures["close_idle_cli"] = celery_cli(
        "control", "proxyfix_close_idle", str(IDLE_SECONDS)
    )
    figures["close_idle"] = by_node(figures["close_idle_cli"])

    busy_out = {}
    for n, result in busy.items():
        try:
            busy_out[n] = result.get(timeout=40)
        except Exception as exc:
            busy_out[n] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    figures["busy"] = {
        n: {"pid": o.get("pid"), "last": o.get("out", "").split()[-1:], **o}
        for n, o in busy_out.items()
    }
    for o in figures["busy"].values():
        o.pop("out", None)

    time.sleep(1.5)  # the closed proxies' owners notice and publish
    after = by_node(app.control.broadcast("proxyfix_proxies", reply=True, timeout=5))
    figures["after_close"] = after

    again = []
    for n in NODES:
        again += on_node(task, n, [f"echo again-{i}" for i in range(4)], 40)
    figures["tasks_after_close"] = f"{sum('error' not in o for o in again)}/8"
    figures["first_error_after_close"] = next(
        (o["error"] for o in again if "error" in o), None
    )
    return figures


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="proxyfix-fleet-"))
    figures: dict[str, Any] = {}
    started = time.monotonic()
    redis = None
    workers: dict[str, Any] = {}
    try:
        _become_subreaper()
        redis, url = start_redis(workdir)
        os.environ["PFX_REDIS_URL"] = url
        from tests.celery_app.app import app, run  # reads PFX_REDIS_URL

        for n in NODES:
            workers[n] = start_worker(
                workdir, True, name=f"{n}@%h", queues=f"celery,{n}"
            )
        figures.update(scenario(run, app, workers))
        for w in workers.values():
            os.kill(w.pid, signal.SIGTERM)
        for w in workers.values():
            w.wait(30)
    except BaseException as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        figures["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(figures), flush=True)
        for w in workers.values():
            _cleanup(w, None, workdir)
        _cleanup(None, redis, workdir)
    exit_now()
