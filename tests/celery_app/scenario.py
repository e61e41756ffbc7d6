"""The end-to-end scenario: redis, a prefork Celery worker, Fabric 3 through ``ssh -W``.

``main()`` runs in a capped child of the test (tests/test_celery_e2e.py) and
prints one JSON line of figures. It makes itself a child subreaper, so any
process the worker leaves behind (an orphaned proxy, a zombie) is re-parented
here, where it can be counted, and is cleaned up at the end.

PFX_E2E_MODE=fixed runs every step; PFX_E2E_MODE=upstream starts the worker
with PARAMIKO_PROXYFIX_DISABLE=1 and stops after step 2, which is where
upstream fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import REPO_ROOT, capped
from tests.support.sshd import SSH_BIN, free_port

_PR_SET_CHILD_SUBREAPER = 36
_PROXY_PREFIX = f"{SSH_BIN} -W "


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """redis-server on a free loopback port, no persistence; fails clearly."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit(
            "redis-server not found: `apt-get install redis-server` "
            "(bash tests/run installs it)"
        )
    errors = []
    for _ in range(3):  # the port can be taken between probe and bind
        port = free_port()
        log = workdir / f"redis-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
                + ["--appendonly", "no", "--dir", str(workdir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
            time.sleep(0.05)
        proc.kill()
        proc.wait(5)
        errors.append(log.read_text(errors="replace"))
    raise RuntimeError("redis-server did not start:\n" + "\n---\n".join(errors))


def start_worker(
    workdir: Path,
    fixed: bool,
    pool: str = "prefork",
    concurrency: int = 2,
    name: str = "e2e@%h",
    queues: str = "celery",
    env: dict[str, str] | None = None,
    app: str = "tests.celery_app.app",
    unset: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """``celery worker --pool=POOL --concurrency=N``; returns once it is ready."""
    log = workdir / f"worker-{name.split('@')[0]}.log"
    full = dict(
        os.environ, PARAMIKO_PROXYFIX_DISABLE="" if fixed else "1", **(env or {})
    )
    for variable in unset:
        full.pop(variable, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker"]
            + [f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=INFO"]
            + (["-O", "fair"] if pool == "prefork" else [])
            + ["--without-heartbeat", "--without-mingle", "--without-gossip"]
            + ["-n", name, "-Q", queues],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and proc.poll() is None:
        if b" ready." in log.read_bytes():
            return proc
        time.sleep(0.1)
    raise RuntimeError(f"worker not ready:\n{log.read_text(errors='replace')[-4000:]}")


def pool(main: int) -> list[int]:
    """The worker's pool processes."""
    return [c for c in capped.child_pids(main) if "celery" in capped.cmdline(c)]


def proxies_under(pid: int) -> list[int]:
    """Living ``ssh -W`` processes below ``pid``."""
    return [
        p
        for p in capped.descendants(pid)
        if capped.cmdline(p).startswith(_PROXY_PREFIX)
        and capped.proc_state(p) not in (None, "Z")
    ]


def zombies_under(pid: int) -> int:
    return sum(capped.proc_state(p) == "Z" for p in capped.descendants(pid))


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            total += capped.cpu_seconds(pid)
    return total


def submit(task: Any, commands: list[str], timeout: float) -> list[dict[str, Any]]:
    """Send all, then collect; a failure becomes {"error": ...}."""
    pending = [task.delay(c) for c in commands]
    deadline = time.monotonic() + timeout
    outs: list[dict[str, Any]] = []
    for result in pending:
        try:
            outs.append(result.get(timeout=max(0.1, deadline - time.monotonic())))
        except Exception as exc:
            outs.append({"error": f"{type(exc).__name__}: {exc}"[:300]})
    return outs


def _ok(outs: list[dict[str, Any]]) -> int:
    return sum("error" not in o for o in outs)


def scenario(task: Any, worker: subprocess.Popen[bytes], fixed: bool) -> dict:
    main = worker.pid
    figures: dict[str, Any] = {}

    # 1. Tasks succeed, and each pool process caches its own connection.
    warm: list[dict[str, Any]] = []
    for _ in range(4):
        warm += submit(task, ["sleep 0.4; echo warm"] * 4, 30)
        if len({o["pid"] for o in warm if "error" not in o}) == 2:
            break
    figures["tasks_ok_before"] = f"{_ok(warm)}/{len(warm)}"
    figures["pool_processes_with_a_proxy"] = len({o.get("pid") for o in warm} - {None})

    # 2. Every ssh -W is killed: CPU over 2 s (against a busy loop's over the
    # same 2 s: a spin gets less than a core on a busy machine), then the
    # next tasks.
    killed = proxies_under(main)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    figures["proxies_killed"] = len(killed)
    time.sleep(0.5)
    everyone = [main, *pool(main)]
    figures["worker_cpu_after_kill"] = capped.cpu_share(
        lambda: cpu_of(everyone), 2.0
    ).report()
    after = submit(task, [f"echo after-kill-{i}" for i in range(8)], 30)
    figures["tasks_recovered"] = f"{_ok(after)}/{len(after)}"
    figures["first_error_after_kill"] = next(
        (o["error"] for o in after if "error" in o), None
    )
    figures["zombies_after_kill"] = zombies_under(main)
    if not fixed:
        return figures

    # 3. A hard time limit ends a pool process mid-command.
    limited = task.apply_async(("sleep 30",), time_limit=2)
    try:
        limited.get(timeout=20)
        figures["time_limit"] = "did not fire"
    except Exception as exc:
        figures["time_limit"] = type(exc).__name__
    time.sleep(1.0)
    alive = proxies_under(os.getpid())  # orphans come to us: we are subreaper
    workers = {main, *pool(main)}
    figures["orphaned_proxies_after_time_limit"] = sum(
        _ppid(p) not in workers for p in alive
    )
    # A proxy the pool process could not reap comes here as a zombie: say how
    # it ended (SIGKILL: the kernel's death signal, the pool process having
    # been killed before its shutdown handler ran).
    figures["time_limited_proxy_reaped_here"] = _reap_zombie_children()
    again = submit(task, ["echo after-time-limit"] * 2, 30)
    figures["tasks_ok_after_time_limit"] = f"{_ok(again)}/{len(again)}"

    # 4. Warm shutdown: SIGTERM to the main process.
    t0 = time.monotonic()
    os.kill(main, signal.SIGTERM)
    worker.wait(30)
    figures["shutdown_seconds"] = round(time.monotonic() - t0, 2)
    time.sleep(0.5)
    figures["proxies_left_after_shutdown"] = len(proxies_under(os.getpid()))
    zombies = [p for p in capped.child_pids() if capped.proc_state(p) == "Z"]
    figures["zombies_after_shutdown"] = len(zombies)
    figures["zombie_names"] = [_comm(p) for p in zombies]
    return figures


def _reap_zombie_children() -> list[str]:
    ended = []
    for pid in capped.child_pids():
        if capped.proc_state(pid) == "Z":
            name = _comm(pid)
            status = os.waitpid(pid, 0)[1]
            code = os.waitstatus_to_exitcode(status)
            how = signal.Signals(-code).name if code < 0 else f"exit {code}"
            ended.append(f"{name}: {how}")
    return ended


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        stat = f.read()
        return stat[stat.index("(") + 1 : stat.rindex(")")]
    return "?"


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def main() -> None:
    fixed = os.environ["PFX_E2E_MODE"] == "fixed"
    workdir = Path(tempfile.mkdtemp(prefix="proxyfix-e2e-"))
    figures: dict[str, Any] = {"mode": os.environ["PFX_E2E_MODE"]}
    started = time.monotonic()
    redis = worker = None
    try:
        _become_subreaper()
        redis, url = start_redis(workdir)
        os.environ["PFX_REDIS_URL"] = url
        from tests.celery_app.app import run  # reads PFX_REDIS_URL

        worker = start_worker(workdir, fixed)
        figures.update(scenario(run, worker, fixed))
    except BaseException as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        figures["seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(figures), flush=True)
        _cleanup(worker, redis, workdir)
    exit_now()


def exit_now() -> None:
    """End a scenario process once its report is printed.

    Celery's AsyncResult finalizers would retry the stopped Redis for up to a
    minute at interpreter exit (seen on 3.9).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _cleanup(
    worker: subprocess.Popen[bytes] | None,
    redis: subprocess.Popen[bytes] | None,
    workdir: Path,
) -> None:
    """Kill whatever is left (upstream's spinning worker included), reap all."""
    if worker is not None and worker.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(worker.pid, signal.SIGKILL)
    left = capped.descendants(os.getpid())
    capped.kill_pids(left)
    capped.wait_gone(left, timeout=5.0)
    for proc in (worker, redis):
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    shutil.rmtree(workdir, ignore_errors=True)
