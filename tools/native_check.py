"""Behaviour checks for a paramiko patched with patches/, without the package.

Run it with the interpreter whose paramiko is to be checked::

    python tools/native_check.py

It must not import ``paramiko_proxyfix``: it loads only the package's
loopback SSH server and relay, by path, and verifies at the end that the
package was never imported. Every wait is bounded, so an unpatched paramiko
fails the checks instead of hanging. Prints one line per check; exits 0 only
if all pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paramiko

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = REPO / "paramiko_proxyfix" / "cli" / "loopback.py"
_spec = importlib.util.spec_from_file_location("proxyfix_loopback", LOOPBACK)
assert _spec is not None and _spec.loader is not None
loopback: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loopback)

LIMIT = 2.0  # seconds any ending may take; the fix needs milliseconds


class Failed(Exception):
    pass


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
                found.append(int(name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def _wait(predicate: Callable[[], bool], limit: float = LIMIT) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.002)
    return None


def _connect(server: Any, command: str | None = None) -> tuple[Any, Any]:
    proxy = paramiko.ProxyCommand(
        command or loopback.relay_command(server.host, server.port)
    )
    return proxy, server.connect(proxy)


def _after_close(proxy: Any, client: Any) -> None:
    transport = client.get_transport()
    client.close()
    if transport is not None:
        transport.join(LIMIT)
    open_pipes = [
        s for s in (proxy.process.stdin, proxy.process.stdout, proxy.process.stderr)
        if not s.closed
    ]  # fmt: skip
    if open_pipes:
        raise Failed(f"close() left {len(open_pipes)} pipes open")
    if os.path.exists(f"/proc/{proxy.process.pid}") and not _alive(proxy.process.pid):
        raise Failed("close() left the proxy a zombie")


def check_killed_proxy(server: Any) -> str:
    proxy, client = _connect(server)
    transport = client.get_transport()
    channel = transport.open_session()
    channel.exec_command("wait")
    waited: list[int] = []
    threading.Thread(
        target=lambda: waited.append(channel.recv_exit_status()), daemon=True
    ).start()
    time.sleep(0.1)
    os.kill(proxy.process.pid, signal.SIGKILL)
    took = _wait(lambda: not transport.is_active())
    if took is None:
        raise Failed(f"the transport was still active {LIMIT} s after the kill")
    if _wait(lambda: bool(waited)) is None:
        raise Failed("recv_exit_status() did not return")
    error = transport.get_exception()
    if type(error).__name__ != "ProxyCommandExited" or error.signal_name != "SIGKILL":
        raise Failed(f"the transport's error is {error!r}")
    before, start = time.process_time(), time.monotonic()
    time.sleep(0.5)
    cpu = (time.process_time() - before) / (time.monotonic() - start)
    if cpu > 0.3:
        raise Failed(f"{cpu:.0%} of a core used after the kill")
    _after_close(proxy, client)
    return f"ended in {took * 1000:.0f} ms, {cpu:.1%} CPU after, reaped on close"


def check_failing_proxy(server: Any) -> str:
    with socket.socket() as probe:
        probe.bind((server.host, 0))
        port = probe.getsockname()[1]
    proxy = paramiko.ProxyCommand(loopback.relay_command(server.host, port))
    start = time.monotonic()
    try:
        loopback.connect(
            server.host, port, server.key.get_base64(), proxy, timeout=LIMIT
        )
    except paramiko.ProxyCommandFailure as exc:
        took = time.monotonic() - start
        if getattr(exc, "returncode", None) != 255 or "refused" not in str(exc):
            raise Failed(f"connect() raised {exc!r}") from None
    except Exception as exc:
        raise Failed(f"connect() raised {exc!r}, not a ProxyCommandFailure") from None
    else:
        raise Failed("connect() through a failing proxy succeeded")
    finally:
        proxy.close()
    return (
        f"connect() failed in {took * 1000:.0f} ms with the proxy's status and stderr"
    )


def check_bad_command(server: Any) -> str:
    try:
        paramiko.ProxyCommand("/nonexistent/proxy-binary -W host:22")
    except paramiko.ProxyCommandFailure as exc:
        if "/nonexistent/proxy-binary" not in str(exc):
            raise Failed(f"the error does not name the command: {exc}") from None
        return f"raised {type(exc).__name__} naming the command"
    except Exception as exc:
        raise Failed(f"raised {exc!r}, not a ProxyCommandFailure") from None
    raise Failed("no error for a missing binary")


def check_exact_bytes(server: Any) -> str:
    proxy, client = _connect(server)
    channel = client.get_transport().open_session()
    channel.settimeout(LIMIT * 5)
    channel.exec_command("cat")
    data = os.urandom(1 << 20)
    sender = threading.Thread(
        target=lambda: (channel.sendall(data), channel.shutdown_write()), daemon=True
    )
    sender.start()
    got = bytearray()
    while True:
        chunk = channel.recv(65536)
        if not chunk:
            break
        got += chunk
    _after_close(proxy, client)
    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
        raise Failed(f"{len(got)} bytes came back, not the {len(data)} sent")
    return "1 MiB through the proxy and back, sha256 equal"


def check_grandchild_holds_pipe(server: Any) -> str:
    relay = loopback.relay_command(server.host, server.port)
    proxy, client = _connect(server, f"sh -c 'sleep 30 & exec {relay}'")
    transport = client.get_transport()
    grandchildren = _children(proxy.process.pid)
    try:
        os.kill(proxy.process.pid, signal.SIGKILL)
        took = _wait(lambda: not transport.is_active())
        if took is None:
            raise Failed("the transport did not end while a grandchild held the pipe")
        _after_close(proxy, client)
        if _wait(lambda: not any(_alive(p) for p in grandchildren)) is None:
            raise Failed("close() left the proxy's child running")
    finally:
        for pid in grandchildren:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return f"ended in {took * 1000:.0f} ms; close() ended the proxy's child too"


CHECKS = [
    check_killed_proxy,
    check_failing_proxy,
    check_bad_command,
    check_exact_bytes,
    check_grandchild_holds_pipe,
]


def main() -> None:
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    print(f"paramiko {paramiko.__version__} from {os.path.dirname(paramiko.__file__)}")
    failures = 0
    with loopback.LoopbackServer() as server:
        for check in CHECKS:
            name = check.__name__[len("check_") :]
            try:
                print(f"ok    {name}: {check(server)}", flush=True)
            except Exception as exc:
                failures += 1
                print(f"FAIL  {name}: {exc}", flush=True)
    if "paramiko_proxyfix" in sys.modules:
        failures += 1
        print("FAIL  paramiko_proxyfix was imported")
    print(f"{len(CHECKS) - failures} passed, {failures} failed", flush=True)
    # An unpatched paramiko may leave a transport thread spinning.
    os._exit(1 if failures else 0)


if __name__ == "__main__":
    main()
