"""The incident, measured: a proxy dies under a live connection.

``demo`` runs :func:`main` in two child processes, one with the fix disabled,
so that the spinning one can be capped and killed; ``check`` calls
:func:`killed_proxy` in its own process. Every wait here is bounded, because
without the fix the connection never notices anything.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import paramiko

from .. import _patch, procfs
from .loopback import connect, relay_command


def _describe(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return f"{type(exc).__name__}: {exc}"


def _is_zombie(pid: int) -> bool:
    info = procfs.stat(pid)
    return info is not None and info.state == "Z"


def _open_pipes(proxy: Any) -> int:
    streams = (proxy.process.stdin, proxy.process.stdout, proxy.process.stderr)
    return sum(1 for s in streams if s is not None and not s.closed)


def killed_proxy(
    host: str, port: int, host_key: str, detect_limit: float, cpu_window: float
) -> dict[str, Any]:
    """Run a command through a relay proxy, SIGKILL the proxy, watch, close.

    Reports how long the transport took to notice (None: not within
    ``detect_limit``), the CPU share of this process afterwards, what a caller
    blocked in ``recv_exit_status()`` got, and what ``close()`` left behind.
    """
    proxy = paramiko.ProxyCommand(relay_command(host, port))
    client = connect(host, port, host_key, proxy)
    transport = client.get_transport()
    if transport is None:
        raise RuntimeError("connect() returned without a transport")
    channel = transport.open_session()
    channel.exec_command("wait")
    waited: dict[str, Any] = {}

    def wait_for_exit() -> None:
        status = channel.recv_exit_status()
        waited["seconds"] = time.monotonic() - killed_at
        waited["status"] = status

    waiter = threading.Thread(
        target=wait_for_exit, name="paramiko_proxyfix demo waiter", daemon=True
    )
    time.sleep(0.2)  # an idle connection, as in the incident
    killed_at = time.monotonic()
    waiter.start()
    os.kill(proxy.process.pid, signal.SIGKILL)
    detect: float | None = None
    while time.monotonic() - killed_at < detect_limit:
        if not transport.is_active():
            detect = time.monotonic() - killed_at
            break
        time.sleep(0.002)
    cpu = 0.0
    if cpu_window > 0:
        before, start = time.process_time(), time.monotonic()
        time.sleep(cpu_window)
        cpu = (time.process_time() - before) / (time.monotonic() - start)
    waiter.join(0.05)
    error = _describe(transport.get_exception())
    waited_before_close = dict(waited)  # close() releases a blocked caller
    client.close()
    # A transport that ended by itself closes its socket from its own thread,
    # right after is_active() turns False: let it finish.
    transport.join(detect_limit)
    return {
        "detect_seconds": detect,
        "cpu_after_kill": cpu,
        "waiter_seconds": waited_before_close.get("seconds"),
        "waiter_status": waited_before_close.get("status"),
        "error": error,
        "zombie_after_close": _is_zombie(proxy.process.pid),
        "pipes_open_after_close": _open_pipes(proxy),
    }


def failing_proxy(host: str, host_key: str, banner_timeout: float) -> dict[str, Any]:
    """Connect through a proxy that cannot reach its target, as ``ssh -W`` to a
    closed port: how long until connect() fails, and with which error."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind((host, 0))
        closed_port = probe.getsockname()[1]
    proxy = paramiko.ProxyCommand(relay_command(host, closed_port))
    start = time.monotonic()
    error: str | None = None
    try:
        connect(host, closed_port, host_key, proxy, timeout=banner_timeout).close()
    except Exception as exc:
        error = _describe(exc)
    seconds = time.monotonic() - start
    proxy.close()
    return {"seconds": seconds, "error": error}


def main() -> None:
    """Child entry point: ``HOST PORT HOST_KEY DETECT_LIMIT CPU_WINDOW BANNER``.

    Prints one JSON object, then leaves with ``os._exit``: without the fix a
    transport thread may still be spinning, and the result is what matters.
    """
    # The transport logs the proxy's death at ERROR; the demo reports it.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    host, port, key, limit, window, banner = sys.argv[1:7]
    result: dict[str, Any] = {
        "fix_installed": _patch.is_installed(),
        "unsupported": _patch.unsupported_reason(),
    }
    try:
        result["killed"] = killed_proxy(
            host, int(port), key, float(limit), float(window)
        )
        result["failing"] = failing_proxy(host, key, float(banner))
    except Exception as exc:
        result["crash"] = _describe(exc)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
