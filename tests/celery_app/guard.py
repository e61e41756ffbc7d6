"""The fleet view turned against the host: ``main()`` runs capped, prints one JSON line.

Three prefork workers (2 pool processes each) on one Redis, each with a run
directory of its own (TMPDIR, no XDG_RUNTIME_DIR, so the predictable
``$TMPDIR/paramiko_proxyfix-<uid>``):

- ``ok``: a usable run directory;
- ``foreign``: the run directory made first by another user (PFX_OTHER_UID);
- ``symlink``: a symlink at the run directory's path, to a directory of ours.

Every pool process holds an idle fake proxy whose command carries secrets.
Then the real CLIs: ``celery inspect proxyfix_proxies``, ``celery control
proxyfix_close_idle`` with values that must be refused (and, through
``broadcast``, ones the CLI cannot send), then a valid one. The figures keep
the raw reply texts, the snapshot files and the worker logs' counts.
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

from tests.celery_app import scenario as scenario_mod
from tests.celery_app.fleet import by_node, on_node
from tests.celery_app.scenario import (
    _become_subreaper,
    _cleanup,
    exit_now,
    pool,
    start_redis,
)
from tests.support import REPO_ROOT, capped

#: The nodes to run (PFX_GUARD_NODES); "foreign" needs PFX_OTHER_UID.
NODES = tuple(os.environ.get("PFX_GUARD_NODES", "ok,foreign,symlink").split(","))
SECRETS = ("hunter2", "hunter3", "hunter4")
#: Refused by the worker, sent by the CLI (``--`` lets ``-1`` through click).
BAD_CLI = ("nan", "inf", "0", "-1", "abc")
#: Refused by the worker, sent through ``app.control.broadcast``.
BAD_BROADCAST: dict[str, dict[str, Any]] = {
    "-inf": {"seconds": "-inf"},
    "1e999": {"seconds": "1e999"},
    "": {"seconds": ""},
    "-0.5": {"seconds": -0.5},
    "true": {"seconds": True},
    "none": {"seconds": None},
    "missing": {},
    "list": {"seconds": [5]},
}
RUN_DIR = f"paramiko_proxyfix-{os.getuid()}"
#: Replies are awaited from these nodes only, so none waits out its timeout.
DESTINATION = [f"{n}@guard" for n in NODES]


def fake_proxy(bindir: Path) -> str:
    """A proxy command with secrets in three forms; the programs just run cat."""
    bindir.mkdir()
    for name in ("sshpass", "ssh"):
        (bindir / name).write_text("#!/bin/sh\nexec cat\n")
        (bindir / name).chmod(0o755)
    return (
        f"{bindir}/sshpass -p hunter2 {bindir}/ssh -o ProxyPassword=hunter3"
        " -o 'ProxyCommand=sshpass -p hunter4 ssh -W %h:%p bastion'"
        " -W 127.0.0.1:22 root@target"
    )


def prepare(workdir: Path, node: str) -> Path:
    """The node's TMPDIR (mode 1777, as /tmp), its run directory set up."""
    tmp = workdir / f"tmp-{node}"
    tmp.mkdir()
    tmp.chmod(0o1777)
    run_dir = tmp / RUN_DIR
    if node == "foreign":
        run_dir.mkdir(mode=0o755)
        os.chown(run_dir, int(os.environ["PFX_OTHER_UID"]), -1)
    elif node == "symlink":
        target = workdir / "ours"
        target.mkdir(mode=0o700)
        run_dir.symlink_to(target)
    return tmp


def start_worker(workdir: Path, node: str, tmp: Path) -> subprocess.Popen[bytes]:
    """A prefork worker of the guard app on queue ``node``; once it is ready."""
    return scenario_mod.start_worker(
        workdir,
        fixed=True,
        name=f"{node}@guard",
        queues=node,
        env={"TMPDIR": str(tmp)},
        app="tests.celery_app.guard_app",
        unset=("XDG_RUNTIME_DIR",),
    )


def cli(*args: str) -> dict[str, Any]:
    """``celery -A tests.celery_app.guard_app ARGS``: its output and status."""
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.celery_app.guard_app", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO_ROOT),
        check=False,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith(("{", "["))]
    return {
        "rc": out.returncode,
        "stdout": out.stdout,
        "stderr": out.stderr[-3000:],
        "json": by_node(json.loads(lines[-1])) if lines else None,
    }


_TO_ALL = ("--timeout", "10", "-d", ",".join(DESTINATION))


def close_idle(value: str, *json: str) -> dict[str, Any]:
    """``celery control [--json] proxyfix_close_idle -- VALUE`` to every node."""
    return cli("control", *json, *_TO_ALL, "proxyfix_close_idle", "--", value)


def inspect() -> dict[str, Any]:
    return cli("inspect", "--json", *_TO_ALL, "proxyfix_proxies")


def hold_everywhere(task: Any, workers: dict[str, Any], command: str) -> dict:
    """A proxy in each pool process of each node: {node: {pool pid: proxy pid}}."""
    held: dict[str, dict[int, int]] = {}
    for node, worker in workers.items():
        want = set(pool(worker.pid))
        held[node] = {}
        for _ in range(6):
            for out in on_node(task, node, [command] * 2, 30):
                if "pid" in out:
                    held[node][out["pid"]] = out["proxy"]
            if set(held[node]) >= want:
                break
        held[node] = {p: held[node][p] for p in want if p in held[node]}
    return held


def alive(pids: list[int]) -> int:
    return sum(capped.proc_state(p) not in (None, "Z") for p in pids)


def log_figures(workdir: Path, node: str) -> dict[str, Any]:
    """The worker log's lines about the run directory, and any traceback."""
    text = (workdir / f"worker-{node}.log").read_text(errors="replace")
    lines = text.splitlines()
    about = [x for x in lines if RUN_DIR in x]
    return {
        "run_dir_lines": about,
        "tracebacks": sum("Traceback" in x for x in lines),
        "command_errors": [x for x in lines if "command error" in x][:5],
        "secret_in_log": [s for s in SECRETS if s in text],
    }


def scenario(task: Any, app: Any, workdir: Path, workers: dict[str, Any]) -> dict:
    figures: dict[str, Any] = {"pools": {n: pool(w.pid) for n, w in workers.items()}}
    command = fake_proxy(workdir / "bin")
    held = hold_everywhere(task, workers, command)
    figures["held"] = held
    time.sleep(4.0)  # live proxies: a snapshot refresh every second

    run_dir = workdir / "tmp-ok" / RUN_DIR
    figures["snapshot_files"] = {
        f.name: f.read_text(errors="replace") for f in sorted(run_dir.iterdir())
    }
    figures["inspect"] = inspect()
    figures["bad_cli"] = {v: close_idle(v, "--json") for v in BAD_CLI}
    figures["bad_cli_text"] = {v: close_idle(v) for v in ("nan", "-1")}
    figures["bad_broadcast"] = {
        k: by_node(
            app.control.broadcast(
                "proxyfix_close_idle",
                arguments=args,
                reply=True,
                timeout=10,
                destination=DESTINATION,
            )
        )
        for k, args in BAD_BROADCAST.items()
    }
    figures["alive_after_bad"] = {n: alive(list(h.values())) for n, h in held.items()}
    figures["inspect_after_bad"] = inspect()

    figures["valid"] = close_idle("1", "--json")
    ok_proxies = list(held["ok"].values())
    figures["ok_left_after_valid"] = capped.wait_gone(ok_proxies, timeout=10)
    figures["alive_after_valid"] = {n: alive(list(h.values())) for n, h in held.items()}
    time.sleep(1.5)  # the owners notice and publish
    figures["inspect_after_valid"] = inspect()
    figures["logs"] = {n: log_figures(workdir, n) for n in NODES}
    if "foreign" in NODES:
        figures["foreign_dir"] = sorted(os.listdir(workdir / "tmp-foreign" / RUN_DIR))
    figures["symlink_target"] = sorted(os.listdir(workdir / "ours"))
    return figures


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="proxyfix-guard-"))
    workdir.chmod(0o755)
    figures: dict[str, Any] = {}
    started = time.monotonic()
    redis = None
    workers: dict[str, Any] = {}
    try:
        _become_subreaper()
        redis, url = start_redis(workdir)
        os.environ["PFX_REDIS_URL"] = url
        from tests.celery_app.guard_app import app, hold  # reads PFX_REDIS_URL

        for node in NODES:
            workers[node] = start_worker(workdir, node, prepare(workdir, node))
        figures.update(scenario(hold, app, workdir, workers))
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
