"""One measurement in a fresh interpreter: ``python _child.py '<json config>'``.

The config says which code runs (``impl``: the fix, upstream paramiko with
the fix uninstalled, or a direct socket), which proxy command to use, and what
to measure. The result is one JSON line on stdout. run.py starts this under a
wall-clock cap, because upstream spins forever once its proxy is dead.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Callable, cast

import paramiko

import paramiko_proxyfix
from tests.support import capped  # the repo root is on PYTHONPATH

Config = dict[str, Any]


def _cpu() -> float:
    """CPU seconds of this process: every thread, the transport's included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Client:
    """Connects the way the config says: through a ProxyCommand or directly."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.pkey = paramiko.Ed25519Key(filename=cfg["key"])
        self.host_keys = paramiko.HostKeys(cfg["known_hosts"])

    def connect(self) -> paramiko.SSHClient:
        cfg = self.cfg
        sock = paramiko.ProxyCommand(cfg["proxy"]) if cfg["proxy"] else None
        client = paramiko.SSHClient()
        for host, keys in self.host_keys.items():
            for kind, key in keys.items():
                client.get_host_keys().add(host, kind, key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                cfg["host"],
                cfg["port"],
                username=cfg["user"],
                pkey=self.pkey,
                sock=sock,
                allow_agent=False,
                look_for_keys=False,
                timeout=cfg.get("timeout", 20),
                banner_timeout=cfg.get("timeout", 20),
                auth_timeout=cfg.get("timeout", 20),
            )
        except BaseException:
            client.close()
            if sock is not None:
                sock.close()
            raise
        return client


def _transport(client: paramiko.SSHClient) -> paramiko.Transport:
    transport = client.get_transport()
    assert transport is not None
    return transport


def _timed(work: Callable[[], None]) -> tuple[float, float]:
    c0, w0 = _cpu(), time.perf_counter()
    work()
    return time.perf_counter() - w0, _cpu() - c0


# -- throughput ---------------------------------------------------------------


def transfer(cfg: Config, client_factory: Client) -> dict[str, Any]:
    """64 MiB over an exec channel, then SFTP get and put, sha256 checked."""
    size, path, want = cfg["size"], cfg["file"], cfg["sha256"]
    client = client_factory.connect()
    out: dict[str, Any] = {}
    try:
        # The channel's bytes are counted, not kept or hashed, so the figure
        # is the transport's; the SFTP figures check every byte.
        got: list[int] = []
        first: list[float] = []

        def channel(command: str) -> None:
            chan = _transport(client).open_session()
            chan.exec_command(command)
            while True:
                data = chan.recv(1 << 20)
                if not data:
                    break
                if not got:
                    first.append(time.perf_counter())
                got.append(len(data))
            first.append(time.perf_counter())
            if chan.recv_exit_status() != 0:
                raise RuntimeError(f"{command!r} failed on the server")

        # Steady state, as in a long-lived worker: a first transfer warms up
        # the heap, TCP autotuning and the proxy's pipe.
        channel(f"head -c {min(size, 16 << 20)} {path}")
        got.clear()
        first.clear()
        wall, cpu = _timed(lambda: channel(f"cat {path}"))
        sock: Any = _transport(client).sock
        if cfg["proxy"]:
            # How big the pipe from the proxy was at the end (the fix grows it).
            out["stdout_pipe_bytes"] = fcntl.fcntl(sock.process.stdout, 1032)
        if sum(got) != size:
            raise RuntimeError(f"channel: {sum(got)} bytes of {size}")
        # The rate counts from the first byte on: the exec's start-up (sshd
        # forks a shell) is latency, measured on its own, not throughput.
        out["channel"] = {
            "mib_s": (size - got[0]) / 2**20 / (first[1] - first[0]),
            "cpu_s_per_mib": cpu / (size / 2**20),
            "seconds": wall,
        }

        sftp = client.open_sftp()
        digest = hashlib.sha256()

        class Sink:
            def write(self, data: bytes) -> int:
                digest.update(data)
                return len(data)

        def get() -> None:
            sftp.getfo(path, cast(IO[bytes], Sink()))

        out["sftp_get"] = _check(_timed(get), digest, size, want)

        with open(path, "rb") as f:
            payload = f.read(size)
        target = f"{cfg['put_path']}.{os.getpid()}"

        def put() -> None:
            sftp.putfo(io.BytesIO(payload), target, file_size=size, confirm=True)

        try:
            timing = _timed(put)
            with open(target, "rb") as f:
                written = hashlib.sha256(f.read())
            out["sftp_put"] = _check(timing, written, size, want)
        finally:
            if os.path.exists(target):
                os.unlink(target)
        sftp.close()
    finally:
        client.close()
    return out


def _check(
    timing: tuple[float, float], digest: Any, size: int, want: str
) -> dict[str, float]:
    if digest.hexdigest() != want:
        raise RuntimeError("wrong bytes: sha256 mismatch")
    wall, cpu = timing
    mib = size / 2**20
    return {"mib_s": mib / wall, "cpu_s_per_mib": cpu / mib, "seconds": wall}


# -- latency ------------------------------------------------------------------


def latency(cfg: Config, client_factory: Client) -> dict[str, Any]:
    """Connect (proxy start, handshake, auth), exec ``true``, exit status."""
    opens: list[float] = []
    closes: list[float] = []
    for _ in range(cfg["n"]):
        t0 = time.perf_counter()
        client = client_factory.connect()
        _, stdout, _ = client.exec_command("true")
        status = stdout.channel.recv_exit_status()
        t1 = time.perf_counter()
        client.close()
        closes.append(time.perf_counter() - t1)
        if status != 0:
            raise RuntimeError(f"`true` exited {status}")
        opens.append(t1 - t0)
    return {"connect": opens, "close": closes}


# -- starting a proxy ---------------------------------------------------------


def spawn(cfg: Config, client_factory: Client) -> dict[str, Any]:
    """ProxyCommand() alone, in this small process and then in a big one.

    Starting a child costs more in a process with a lot of memory when it
    must fork() rather than vfork(): long-running workers are such processes.
    """
    out: dict[str, Any] = {}
    ballast = bytearray()
    for name, mib in (("small", 0), ("big", cfg["ballast_mib"])):
        ballast = bytearray(mib << 20)
        for page in range(0, len(ballast), 4096):
            ballast[page] = 1  # touched, so it is really resident
        times = []
        for _ in range(cfg["n"]):
            t0 = time.perf_counter()
            proxy = paramiko.ProxyCommand(cfg["proxy"])
            times.append(time.perf_counter() - t0)
            proxy.close()
        out[name] = times
    del ballast
    return out


# -- a killed proxy -----------------------------------------------------------


def detect(cfg: Config, client_factory: Client) -> dict[str, Any]:
    """SIGKILL the proxy of an idle connection; time until is_active() is False.

    Upstream never notices: its attempt stops at the cap, the CPU of the spin
    is measured, and the process exits with the spinning thread still going.
    """
    cap = cfg["cap"]
    times: list[float | None] = []
    cpu_after: float | None = None
    for attempt in range(cfg["n"]):
        client = client_factory.connect()
        transport = _transport(client)
        time.sleep(0.3)  # let the transport settle into its idle read loop
        proxy: Any = transport.sock
        os.kill(proxy.process.pid, signal.SIGKILL)
        t0 = time.perf_counter()
        while transport.is_active() and time.perf_counter() - t0 < cap:
            time.sleep(0.0002)
        took = time.perf_counter() - t0
        times.append(None if transport.is_active() else took)
        if attempt == 0:
            c0, w0 = _cpu(), time.perf_counter()
            time.sleep(1.0)
            cpu_after = (_cpu() - c0) / (time.perf_counter() - w0)
        if times[-1] is None:
            break  # spinning for good; closing it would not help
        client.close()
    return {"times": times, "cpu_after_kill": cpu_after, "cap": cap}


# -- many connections ---------------------------------------------------------


def _open_many(
    client_factory: Client, count: int, workers: int
) -> tuple[list[paramiko.SSHClient], list[str], float]:
    clients: list[paramiko.SSHClient] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        if len(errors) >= 2 * workers:
            return  # failing for good (upstream past fd 1023): stop trying
        try:
            c = client_factory.connect()
        except Exception as exc:  # counted and reported, not fatal
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            clients.append(c)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return clients, errors, time.perf_counter() - t0


def _close_many(clients: list[paramiko.SSHClient], workers: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda c: c.close(), clients))
    return time.perf_counter() - t0


def _children() -> tuple[int, int]:
    """(living, zombie) children of this process, from /proc."""
    zombies = capped.count_zombie_children()
    return len(capped.child_pids()) - zombies, zombies


def _barrier(path: str, cap: float) -> None:
    """Say this child is ready (``PATH.<pid>``), then wait for ``PATH.go``:
    children compared with each other measure the same seconds."""
    Path(f"{path}.{os.getpid()}").touch()
    deadline = time.monotonic() + cap
    while not os.path.exists(f"{path}.go"):
        if time.monotonic() > deadline:
            raise SystemExit("no go from the parent")
        time.sleep(0.01)


def idle(cfg: Config, client_factory: Client) -> dict[str, Any]:
    """CPU of this process while ``count`` connections sit idle."""
    clients, errors, opened = _open_many(client_factory, cfg["count"], 6)
    try:
        time.sleep(1.0)
        if cfg.get("barrier"):
            _barrier(cfg["barrier"], 240)
        c0, w0 = _cpu(), time.perf_counter()
        time.sleep(cfg["seconds"])
        share = (_cpu() - c0) / (time.perf_counter() - w0)
    finally:
        closed = _close_many(clients, 6)
    return {
        "connected": len(clients),
        "errors": errors[:3],
        "error_count": len(errors),
        "cpu_share": share,
        "open_seconds": opened,
        "close_seconds": closed,
    }


class _FirstErrors(logging.Handler):
    """Keeps the transports' first distinct error lines (the real causes)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().splitlines()[0]
        if len(self.seen) < 3 and text not in self.seen and "Traceback" not in text:
            self.seen.append(text)


def many(cfg: Config, client_factory: Client) -> dict[str, Any]:
    """``count`` connections open at once: each opens a channel, then close."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 8 * cfg["count"] + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    causes = _FirstErrors()
    logging.getLogger("paramiko").addHandler(causes)
    clients, errors, opened = _open_many(client_factory, cfg["count"], 12)
    round_trips = 0
    top_fd = -1
    try:
        for c in clients:
            transport = _transport(c)
            sock: Any = transport.sock
            fd = sock.process.stdout.fileno() if cfg["proxy"] else sock.fileno()
            top_fd = max(top_fd, fd)
            try:
                transport.open_session(timeout=20).close()
                round_trips += 1
            except Exception as exc:  # counted and reported, not fatal
                errors.append(f"channel: {type(exc).__name__}: {exc}")
    finally:
        closed = _close_many(clients, 12)
    time.sleep(0.5)
    live, zombies = _children()
    return {
        "connected": len(clients),
        "channels": round_trips,
        "errors": errors[:3],
        "error_count": len(errors),
        "transport_errors": causes.seen,
        "highest_fd": top_fd,
        "open_seconds": opened,
        "close_seconds": closed,
        "children_left": live,
        "zombies_left": zombies,
    }


MEASURES = {
    "transfer": transfer,
    "latency": latency,
    "spawn": spawn,
    "detect": detect,
    "idle": idle,
    "many": many,
}


def main() -> None:
    cfg: Config = json.loads(sys.argv[1])
    if cfg["impl"] != "fix":
        paramiko_proxyfix.uninstall()
    if paramiko_proxyfix.is_installed() != (cfg["impl"] == "fix"):
        raise SystemExit("the fix is not in the state this setup needs")
    result = MEASURES[cfg["measure"]](cfg, Client(cfg))
    result["installed"] = paramiko_proxyfix.is_installed()
    print(json.dumps(result), flush=True)
    # An upstream transport may still spin on its dead proxy: do not join it.
    os._exit(0)


if __name__ == "__main__":
    main()
