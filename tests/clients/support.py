"""What the client-library scenarios measure, in the capped child that runs them.

A scenario connects through the real ``ssh -W`` of the ``PFX_*`` environment
(tests/celery_app/support.ssh_env), does its library's work, SIGKILLs the
proxy of the idle connection and prints one JSON line of figures.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from tests.support import capped

#: CPU share measured after the kill; long enough for upstream's spin to show.
CPU_WINDOW = 1.5


def pipes() -> int:
    """How many pipes this process has open."""
    return sum(t.startswith("pipe:") for t in capped.fd_targets().values())


def proxy_marker() -> str:
    """Part of every ``ssh -W`` command line of this session's sshd."""
    return f"-W 127.0.0.1:{os.environ['PFX_PORT']}"


def kill_when_idle(pid: int) -> None:
    """SIGKILL the proxy once the connection has settled into its idle loop."""
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)


def seconds_until(done: Callable[[], bool], cap: float = 3.0) -> float | None:
    """How long until ``done()`` holds; None if it still does not after ``cap``."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > cap:
            return None
        time.sleep(0.001)
    return time.monotonic() - t0


def cpu_after_kill() -> float:
    """This process's share of a core over the next CPU_WINDOW seconds.

    Only ever compared with an upper bound: load can only lower it.
    """
    t0, c0 = time.monotonic(), capped.process_cpu_seconds()
    time.sleep(CPU_WINDOW)
    return (capped.process_cpu_seconds() - c0) / (time.monotonic() - t0)


def timed(call: Callable[[], Any]) -> tuple[str, float]:
    """``call()``'s result or ``"error: Type: message"``, and seconds taken."""
    t0 = time.monotonic()
    try:
        outcome = str(call())
    except Exception as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"[:300]
    return outcome, time.monotonic() - t0


def leaks(pipes_before: int) -> dict[str, int]:
    """Zombie children, pipes opened since ``pipes_before``, proxies alive."""
    return {
        "zombies": capped.count_zombie_children(),
        "pipes_leaked": pipes() - pipes_before,
        "proxies_left": len(capped.proxy_processes(proxy_marker())),
    }


def emit(**fields: Any) -> None:
    """Print the scenario's JSON line, saying whether the fix was installed."""
    import paramiko_proxyfix

    fields["installed"] = paramiko_proxyfix.is_installed()
    print(json.dumps(fields), flush=True)
