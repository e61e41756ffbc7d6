"""A worker's proxies and its pool processes', seen and closed from its main process.

Celery runs remote-control commands in the worker's main process, while the
prefork pool's proxies live in the pool processes. So each pool process
publishes a snapshot of its proxies and counters, ``<pid>.json`` in the run
directory (rundir.py: per user, 0700, checked, used through its descriptor),
written atomically when a proxy is added or removed and at most once a second
while any proxy is live. The main process reads the files of its
own children only: the pid must be its child and the process start time must
match the file's, so a stale file of a dead process (or of a reused pid) is
never believed, and is removed. A refused run directory makes the view blind:
the reply says so (``"blind": reason``) rather than showing nothing.

Commands appear with password-like values hidden (redact.py), in the
snapshots and again in what the main process relays. Closing a pool
process's proxy signals only a process proven to be that proxy, through the
gate (gate.pin: a pidfd first, then the start time and the parent recorded
in the snapshot); its owner sees it exit, the connection ends cleanly, and
the next task reconnects. The idle time is checked once, up front
(registry.check_seconds): one value decides in the main and pool processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

from . import gate, procfs, registry, rundir
from .logs import log
from .redact import redact

__all__ = ["close_idle", "enable_publishing", "hidden", "report", "run_dir", "withdraw"]

#: Seconds between refreshes of a snapshot while a proxy is live.
REFRESH = 1.0
#: A snapshot's name, and its temporary file's (rundir.RunDir.write).
_SNAPSHOT = re.compile(r"(?P<pid>[0-9]{1,10})\.json")
_TEMP = re.compile(r"\.(?P<pid>[0-9]{1,10})\.json\.tmp")


def run_dir() -> Path:
    """Where the run directory is (rundir.open_dir() decides if it may be used)."""
    return Path(*rundir.location())


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process; None if gone."""
    info = procfs.stat(pid)
    if info is None or info.state == "Z":
        return None
    return info.ppid, info.start_ticks


def hidden(command: object) -> str:
    """A command as the fleet shows it: redact() once more over its words
    (what is hidden already stays hidden)."""
    if not isinstance(command, str):
        return "?"
    return redact(command.split(" "))


# -- the pool process side: publishing ----------------------------------------

_publisher_pid = 0
_lock = threading.Lock()
_dirty = False
_thread_lock = threading.Lock()
_refresher: threading.Thread | None = None
#: Set when a refresher was asked for while the lock was busy.
_wanted = False


def enable_publishing() -> None:
    """Publish this process's snapshot from now on (a Celery pool process)."""
    global _publisher_pid, _refresher, _lock, _thread_lock
    _publisher_pid = os.getpid()
    # Fresh after fork: a parent's thread, or a lock it held, is not ours.
    _lock, _thread_lock, _refresher = threading.Lock(), threading.Lock(), None
    registry.add_listener(_on_change)
    _on_change()


def withdraw() -> None:
    """Stop publishing and remove this process's snapshot (at shutdown)."""
    global _publisher_pid
    if _publisher_pid != os.getpid():
        return
    _publisher_pid = 0
    with contextlib.suppress(OSError, rundir.Refused):
        rd = rundir.open_dir(create=False)
        if rd is not None:
            with rd:
                rd.unlink(f"{os.getpid()}.json")


def _on_change() -> None:
    if os.getpid() != _publisher_pid:
        return  # not enabled here, or a process forked from a publisher
    publish()
    if registry.live():
        _ensure_refresher()


def snapshot() -> dict[str, Any]:
    """This process's proxies and counters, as published."""
    me = os.getpid()
    ps = proc_stat(me)
    return {
        "pid": me,
        "ppid": os.getppid(),
        "start_ticks": ps[1] if ps else None,
        "written": time.time(),
        "stats": registry.stats(),
        "proxies": [dict(p, command=hidden(p["command"])) for p in registry.proxies()],
    }


def publish() -> None:
    """Write the snapshot; skipped (and redone by the writer) if one is under way."""
    global _dirty
    # Never wait here: close() may run in a signal handler that interrupted
    # the thread holding the lock.
    if not _lock.acquire(blocking=False):
        _dirty = True
        return
    try:
        while True:
            _dirty = False
            _write(snapshot())
            if not _dirty:
                return
    except OSError as exc:
        log.debug("cannot publish the proxy snapshot: %s", exc)
    finally:
        _lock.release()


def _write(data: dict[str, Any]) -> None:
    try:
        rd = rundir.open_dir(create=True)
    except rundir.Refused as exc:
        rundir.warn_refused(str(exc))
        return
    if rd is not None:
        with rd:
            rd.write(f"{data['pid']}.json", json.dumps(data).encode())


def _ensure_refresher() -> None:
    global _refresher, _wanted
    _wanted = True
    # Never wait: close() may run in a signal handler that interrupted the
    # thread holding the lock, and that thread then starts the refresher.
    if not _thread_lock.acquire(blocking=False):
        return
    try:
        if _refresher is None:
            thread = threading.Thread(
                target=_refresh, name="paramiko_proxyfix snapshot", daemon=True
            )
            with contextlib.suppress(RuntimeError):  # no new threads at shutdown
                thread.start()
                _refresher = thread
    finally:
        _thread_lock.release()


def _refresh() -> None:
    # Ends once no proxy is live (the last removal published already); no
    # thread lingers in a process without proxies.
    global _refresher, _wanted
    while True:
        _wanted = False
        time.sleep(REFRESH)
        active = _publisher_pid == os.getpid()  # not withdrawn
        if active:
            publish()
        with _thread_lock:
            if not active or (not registry.live() and not _wanted):
                _refresher = None
                return


# -- the main process side: reading and closing -------------------------------


def _load(raw: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _children_snapshots() -> tuple[list[dict[str, Any]], str | None]:
    """The snapshots of this process's living children, and why the view is
    blind (None if it is not). Files of dead processes go."""
    try:
        rd = rundir.open_dir(create=False)
    except rundir.Refused as exc:
        rundir.warn_refused(str(exc))
        return [], str(exc)
    except OSError as exc:
        return [], f"cannot read the run directory: {exc.strerror}"
    if rd is None:
        return [], None  # no pool process has published yet
    me = os.getpid()
    out = []
    with rd:
        try:
            names = rd.names()
        except OSError as exc:
            return [], f"cannot list {rd.path}: {exc.strerror}"
        for name in names:
            m = _SNAPSHOT.fullmatch(name) or _TEMP.fullmatch(name)
            if m is None:
                continue
            pid = int(m["pid"])
            ps = proc_stat(pid)
            if ps is None:
                rd.unlink(name)  # its process is gone
                continue
            if ps[0] != me or name.startswith("."):
                continue  # another worker's, or being written
            data = _load(rd.read(name))
            if data and data.get("pid") == pid and data.get("start_ticks") == ps[1]:
                out.append(data)
    return out, None


def _proxies_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = data.get("proxies")
    return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []


def _entry(proxy: dict[str, Any], now: float) -> dict[str, Any]:
    # Idleness from the last I/O, not the snapshot's age: a snapshot may be
    # up to REFRESH old. Only these fields, and the command hidden once more.
    return {
        "pid": int(proxy["pid"]),
        "owner_pid": int(proxy["owner_pid"]),
        "command": hidden(proxy["command"]),
        "age": round(now - float(proxy["started"]), 1),
        "idle_seconds": round(max(0.0, now - float(proxy["last_io"])), 1),
        "bytes_in": int(proxy["bytes_in"]),
        "bytes_out": int(proxy["bytes_out"]),
        "state": str(proxy["state"]),
    }


def _process(role: str, data: dict[str, Any], now: float) -> dict[str, Any]:
    entries = []
    for proxy in _proxies_of(data):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            entries.append(_entry(proxy, now))
    raw = data.get("stats")
    stats = {
        k: v
        for k, v in (raw.items() if isinstance(raw, dict) else ())
        if isinstance(k, str) and isinstance(v, int)
    }
    return {"pid": data["pid"], "role": role, "stats": stats, "proxies": entries}


def report() -> dict[str, Any]:
    """Every proxy of this process and of its pool processes, as plain data;
    ``"blind"`` says why the pool processes' proxies cannot be seen."""
    snapshots, blind = _children_snapshots()
    now = time.time()
    mine = {
        "pid": os.getpid(),
        "stats": registry.stats(),
        "proxies": registry.proxies(),
    }
    processes = [_process("main", mine, now)]
    processes += [_process("pool", d, now) for d in snapshots]
    processes.sort(key=lambda p: (p["role"] != "main", p["pid"]))
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "proxies": sum(len(p["proxies"]) for p in processes),
        "processes": processes,
    }
    if blind is not None:
        out["blind"] = blind
    return out


def close_idle(seconds: object) -> dict[str, Any]:
    """Close the proxies idle for ``seconds`` here and in the pool processes.

    ``seconds`` must be a finite number > 0 (registry.check_seconds; else
    ValueError or TypeError, before anything is closed anywhere).
    """
    limit = registry.check_seconds(seconds)
    here = registry.close_idle(limit)
    snapshots, blind = _children_snapshots()
    now = time.time()
    signalled, refused = 0, []
    for data in snapshots:
        for proxy in _proxies_of(data):
            try:
                pid, last_io = int(proxy["pid"]), float(proxy["last_io"])
            except (KeyError, TypeError, ValueError):
                continue
            if proxy.get("state") != "running" or now - last_io < limit:
                continue
            ticks = proxy.get("start_ticks")
            why = terminate(pid, ticks if isinstance(ticks, int) else None, data["pid"])
            if why is None:
                signalled += 1
            else:
                refused.append({"pid": pid, "reason": why})
    out: dict[str, Any] = {
        "closed": here + signalled,
        "main": here,
        "pool": signalled,
        "refused": refused,
    }
    if blind is not None:
        out["blind"] = blind
    return out


def terminate(pid: int, start_ticks: int | None, owner: int) -> str | None:
    """SIGTERM ``pid`` through the gate if it provably is the proxy recorded
    (that start time, a child of ``owner``); else why not."""
    if start_ticks is None:
        return "refused: no start time recorded"
    pinned = gate.pin(pid, start_ticks, parents={owner})
    if isinstance(pinned, str):
        return pinned
    try:
        return pinned.send(signal.SIGTERM)
    finally:
        pinned.close()
