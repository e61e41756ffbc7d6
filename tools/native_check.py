"""Behaviour checks for a paramiko patched with patches/, without the package.

Run it with the interpreter whose paramiko is to be checked::

    python tools/native_check.py

It must not import ``paramiko_proxyfix``: it loads only the package's
loopback SSH server and relay, by path, and verifies at the end that the
package was never imported. Every wait is bounded, so an unpatched paramiko
fails the checks instead of hanging. Prints one line per check; exits 0 only
if all pass. The checks are the incident's scenarios:

- killed_proxy: a dead proxy ends the transport, a caller waiting on the
  connection returns, and the process stays idle (no spin);
- failing_proxy: a proxy that cannot reach its target fails connect() at
  once with its exit status and stderr;
- stderr_flood: a proxy that writes 300 KB to stderr does not stall;
- high_descriptors: the proxy's pipes above 1023 work (poll, not select);
- cycles: 20 connect/close cycles leave no zombie, no proxy and no
  descriptor behind;
- exact_bytes: 1 MiB crosses the proxy intact.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import logging
import os
import resource
import shlex
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
CYCLES = 20


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


def check_stderr_flood(server: Any) -> str:
    """A proxy that writes 300 KB to stderr before it relays: the connection
    must not stall behind its full stderr pipe."""
    code = (
        "import os, sys\n"
        "sys.stderr.buffer.write(b'x' * 300000)\n"
        "sys.stderr.flush()\n"
        "relay = sys.argv[1:]\n"
        "os.execv(relay[0], relay)\n"
    )
    relay = shlex.split(loopback.relay_command(server.host, server.port))
    command = shlex.join([sys.executable, "-c", code, *relay])
    start = time.monotonic()
    proxy = paramiko.ProxyCommand(command)
    try:
        client = loopback.connect(
            server.host, server.port, server.key.get_base64(), proxy, timeout=LIMIT
        )
    except Exception as exc:
        proxy.process.kill()
        raise Failed(f"connect() behind a stderr flood raised {exc!r}") from None
    took = time.monotonic() - start
    _echo(client)
    _after_close(proxy, client)
    return f"connected in {took * 1000:.0f} ms past 300 KB of the proxy's stderr"


def _echo(client: Any) -> None:
    """A round trip through the connection (``cat``: the server's side waits
    for our input, so no reply can race the exec request)."""
    channel = client.get_transport().open_session()
    channel.settimeout(LIMIT)
    channel.exec_command("cat")
    channel.sendall(b"hi")
    channel.shutdown_write()
    got = b""
    while True:
        chunk = channel.recv(100)
        if not chunk:
            break
        got += chunk
    if got != b"hi":
        raise Failed(f"cat gave {got!r}")


def check_high_descriptors(server: Any) -> str:
    """The proxy's pipes above 1023, where select() cannot go."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    filler, taken = os.open(os.devnull, os.O_RDONLY), []
    try:
        for fd in range(3, 1100):
            try:
                os.fstat(fd)
            except OSError:
                os.dup2(filler, fd)
                taken.append(fd)
        proxy, client = _connect(server)
        lowest = min(
            p.fileno()
            for p in (proxy.process.stdin, proxy.process.stdout, proxy.process.stderr)
        )
        if lowest <= 1023:
            raise Failed(f"the proxy's pipes start at {lowest}, not above 1023")
        _echo(client)
        _after_close(proxy, client)
    finally:
        for fd in [*taken, filler]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return f"connected and ran a command with the proxy's pipes at {lowest} and up"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _zombies() -> list[int]:
    return [pid for pid in _children(os.getpid()) if not _alive(pid)]


def check_cycles(server: Any) -> str:
    """Connect and close 20 times, keeping the proxies (as a pool would):
    none may stay a zombie, and no descriptor may be left open."""
    proxy, client = _connect(server)  # warm up: threads, the server's sockets
    _after_close(proxy, client)
    gc.collect()
    before, kept = _open_fds(), []
    for _ in range(CYCLES):
        proxy, client = _connect(server)
        _echo(client)
        transport = client.get_transport()
        client.close()
        if transport is not None:
            transport.join(LIMIT)
        kept.append(proxy)
    gc.collect()
    time.sleep(0.1)  # the server's side of each connection ends too
    leaked = _open_fds() - before
    zombies = _zombies()
    running = [p.process.pid for p in kept if _alive(p.process.pid)]
    if zombies or running or leaked > 0:
        raise Failed(
            f"after {CYCLES} cycles: {len(zombies)} zombies, {len(running)} proxies "
            f"running, {leaked} more descriptors open"
        )
    return f"{CYCLES} connect/close cycles: no zombie, no proxy left, no descriptor"


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


CHECKS = [
    check_killed_proxy,
    check_failing_proxy,
    check_stderr_flood,
    check_high_descriptors,
    check_cycles,
    check_exact_bytes,
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
