"""Scenarios run in a capped child process, with or without the fix.

Each prints one JSON line of measurements. The parent test starts them with
``PARAMIKO_PROXYFIX_DISABLE=1`` to show upstream's bug, and without it to show
the fix; a spin or a hang becomes a capped timeout, never a stuck suite.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import paramiko

import paramiko_proxyfix  # installs the fix unless PARAMIKO_PROXYFIX_DISABLE=1
from tests.support import capped


def _emit(**fields: Any) -> None:
    fields["installed"] = paramiko_proxyfix.is_installed()
    print(json.dumps(fields), flush=True)


def _client(proxy_command: str | None = None, **kwargs: Any) -> paramiko.SSHClient:
    env = os.environ
    client = paramiko.SSHClient()
    client.load_host_keys(env["SCN_KNOWN_HOSTS"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = paramiko.ProxyCommand(proxy_command or env["SCN_PROXY"])
    options: dict[str, Any] = {
        "username": env["SCN_USER"],
        "key_filename": env["SCN_KEY"],
        "allow_agent": False,
        "look_for_keys": False,
        "timeout": 10,
        "banner_timeout": 10,
    }
    options.update(kwargs)
    client.connect(env["SCN_HOST"], int(env["SCN_PORT"]), sock=sock, **options)
    return client


def _cpu_share(seconds: float) -> dict[str, float]:
    """This process's CPU against a busy loop's over the same ``seconds``."""
    return capped.cpu_share(capped.process_cpu_seconds, seconds).report()


def _close(client: paramiko.SSHClient) -> None:
    """Close the client; but end at once where upstream's transport still spins.

    Upstream's close() joins the spinning transport thread, that is waits for
    ever: without this the child would run until its cap, and the cap would
    have to be both short (to keep the suite fast) and long (for a busy
    machine).
    """
    transport = client.get_transport()
    if not paramiko_proxyfix.is_installed() and transport and transport.is_active():
        os._exit(0)
    client.close()


def _wait_inactive(transport: paramiko.Transport, cap: float) -> float | None:
    t0 = time.monotonic()
    while transport.is_active():
        if time.monotonic() - t0 > cap:
            return None
        time.sleep(0.0005)
    return time.monotonic() - t0


def kill_idle() -> None:
    """SIGKILL the proxy of an idle connection: detection time, then CPU."""
    client = _client()
    transport = client.get_transport()
    assert transport is not None
    pid = transport.sock.process.pid
    time.sleep(0.3)  # let the transport settle into its idle read loop
    os.kill(pid, signal.SIGKILL)
    detect = _wait_inactive(transport, 3.0)
    cpu = _cpu_share(1.0)
    exc = transport.get_exception()
    error = f"{type(exc).__name__}: {exc}"
    _emit(detect=detect, cpu=cpu, error=error)
    _close(client)


def waiting_caller() -> None:
    """A thread blocked on the connection when the proxy dies."""
    mode = os.environ["SCN_MODE"]
    client = _client()
    transport = client.get_transport()
    assert transport is not None
    _, stdout, _ = client.exec_command("sleep 30")
    outcome: list[Any] = []
    returned = threading.Event()

    def wait() -> None:
        try:
            if mode == "exit_status":
                outcome.append(stdout.channel.recv_exit_status())
            else:
                outcome.append(stdout.channel.recv(10))
        except BaseException as exc:
            outcome.append(repr(exc))
        returned.set()

    threading.Thread(target=wait, daemon=True).start()
    time.sleep(0.3)
    os.kill(transport.sock.process.pid, signal.SIGKILL)
    t0 = time.monotonic()
    took = time.monotonic() - t0 if returned.wait(3.0) else None
    _emit(took=took, outcome=repr(outcome))
    _close(client)


def failing_proxy() -> None:
    """Connect through a proxy whose target refuses."""
    t0 = time.monotonic()
    try:
        _client(banner_timeout=float(os.environ.get("SCN_BANNER_TIMEOUT", "10")))
    except BaseException as exc:
        _emit(took=time.monotonic() - t0, type=type(exc).__name__, error=str(exc))
    else:
        _emit(took=time.monotonic() - t0, type=None, error=None)


def grandchild_holds_pipe() -> None:
    """The proxy dies but a process it started keeps the pipe open."""
    client = _client()
    transport = client.get_transport()
    assert transport is not None
    time.sleep(0.3)
    os.kill(transport.sock.process.pid, signal.SIGKILL)
    detect = _wait_inactive(transport, 12.0)
    _emit(detect=detect, cpu=_cpu_share(0.5))
    _close(client)
