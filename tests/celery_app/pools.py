"""Every Celery pool end to end: ``main()`` runs one pool (PFX_POOL) in a capped child.

Redis, a real worker with that pool, tasks through Fabric 3 with
``gateway="ssh -W ..."`` keeping one connection per process; then every
``ssh -W`` is SIGKILLed, the worker's CPU is measured, tasks reconnect, and a
warm shutdown must leave no proxy. Prints one JSON line of figures. Like
scenario.py it makes itself a child subreaper, so whatever the worker leaves
behind comes here to be counted.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.celery_app.scenario import (
    _become_subreaper,
    _cleanup,
    _comm,
    _ok,
    cpu_of,
    exit_now,
    pool,
    proxies_under,
    start_redis,
    start_worker,
    submit,
    zombies_under,
)
from tests.support import capped

POOLS = ("prefork", "threads", "solo", "gevent", "eventlet")
#: Worker processes with a connection of their own, per pool.
CONCURRENCY = {"prefork": 2, "threads": 4, "solo": 1, "gevent": 4, "eventlet": 4}


def scenario(task: Any, app: Any, worker: Any) -> dict[str, Any]:
    main = worker.pid
    figures: dict[str, Any] = {}

    before = submit(task, ["sleep 0.3; echo warm"] * 8, 40)
    figures["tasks_before"] = f"{_ok(before)}/{len(before)}"
    figures["first_error_before"] = next(
        (o["error"] for o in before if "error" in o), None
    )
    figures["processes_with_a_proxy"] = len(
        {o["pid"] for o in before if "error" not in o}
    )

    # The fleet view sees them, whichever process holds them.
    replies = app.control.broadcast("proxyfix_proxies", reply=True, timeout=5)
    figures["inspect_proxies"] = [
        r["proxies"] for reply in replies for r in reply.values()
    ]

    killed = proxies_under(main)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    figures["proxies_killed"] = len(killed)
    time.sleep(0.5)
    everyone = [main, *pool(main)]
    c0, w0 = cpu_of(everyone), time.monotonic()
    time.sleep(2.0)
    figures["worker_cpu_after_kill"] = round(
        (cpu_of(everyone) - c0) / (time.monotonic() - w0), 3
    )
    after = submit(task, [f"echo after-kill-{i}" for i in range(8)], 40)
    figures["tasks_after"] = f"{_ok(after)}/{len(after)}"
    figures["first_error_after"] = next(
        (o["error"] for o in after if "error" in o), None
    )
    figures["zombies_after_kill"] = zombies_under(main)

    os.kill(main, signal.SIGTERM)
    t0 = time.monotonic()
    try:
        worker.wait(30)
    finally:
        figures["shutdown_seconds"] = round(time.monotonic() - t0, 2)
    time.sleep(0.5)
    figures["proxies_left_after_shutdown"] = len(proxies_under(os.getpid()))
    zombies = [p for p in capped.child_pids() if capped.proc_state(p) == "Z"]
    figures["zombies_after_shutdown"] = [_comm(p) for p in zombies]
    return figures


def main() -> None:
    name = os.environ["PFX_POOL"]
    workdir = Path(tempfile.mkdtemp(prefix=f"proxyfix-{name}-"))
    figures: dict[str, Any] = {"pool": name}
    started = time.monotonic()
    redis = worker = None
    try:
        _become_subreaper()
        redis, url = start_redis(workdir)
        os.environ["PFX_REDIS_URL"] = url
        from tests.celery_app.app import app, run  # reads PFX_REDIS_URL

        env = {"PFX_IN_STREAM": "0"} if name == "eventlet" else {}
        # PFX_E2E_MODE=upstream (by hand): the same run without the fix.
        fixed = os.environ.get("PFX_E2E_MODE", "fixed") == "fixed"
        figures["fixed"] = fixed
        worker = start_worker(
            workdir, fixed, pool=name, concurrency=CONCURRENCY[name], env=env
        )
        figures.update(scenario(run, app, worker))
    except BaseException as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"
        log = workdir / "worker-e2e.log"
        if log.exists():
            figures["worker_log_tail"] = log.read_text(errors="replace")[-3000:]
        raise
    finally:
        figures["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(figures), flush=True)
        _cleanup(worker, redis, workdir)
    exit_now()
