"""A worker's proxies and its pool processes', seen and closed from its main process.

Celery runs remote-control commands in the worker's main process, while the
prefork pool's proxies live in the pool processes. So each pool process
publishes a snapshot of its proxies and counters, a small JSON file
``<pid>.json`` in a per-user run directory (mode 0700), written atomically
(rename) when a proxy is added or removed and at most once a second while
any proxy is live. The main process reads the files of its own children only:
the pid must be its child and the process start time must match the file's,
so a stale file of a dead process (or of a reused pid) is never believed.

Closing a pool process's proxy from the main process signals only a process
proven to be that proxy: a pidfd pins the process, then /proc must show the
start time and the parent recorded in the snapshot, and only then does
``pidfd_send_signal`` send SIGTERM. The pool process then sees its proxy
exit, its connection ends cleanly, and the next task reconnects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import procfs, registry

__all__ = ["close_idle", "enable_publishing", "report", "run_dir", "withdraw"]

log = logging.getLogger("paramiko_proxyfix")

#: Seconds between refreshes of a snapshot while a proxy is live.
REFRESH = 1.0

_HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


def run_dir() -> Path:
    """``$XDG_RUNTIME_DIR/paramiko_proxyfix``, else ``/tmp/paramiko_proxyfix-<uid>``."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "paramiko_proxyfix"
    return Path(tempfile.gettempdir()) / f"paramiko_proxyfix-{os.getuid()}"


def _own_dir(create: bool) -> Path | None:
    """The run directory, if it is a real directory of ours (no one else may write)."""
    path = run_dir()
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    # In /tmp anyone could have made it first: refuse theirs, and symlinks.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        log.warning("%s is not a directory of uid %d: no snapshots", path, os.getuid())
        return None
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process; None if gone."""
    info = procfs.stat(pid)
    if info is None or info.state == "Z":
        return None
    return info.ppid, info.start_ticks


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
    path = _own_dir(create=False)
    if path is not None:
        with contextlib.suppress(OSError):
            (path / f"{os.getpid()}.json").unlink()


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
        "proxies": registry.proxies(),
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
    path = _own_dir(create=True)
    if path is None:
        return
    tmp = path / f".{data['pid']}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path / f"{data['pid']}.json")


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


def _children_snapshots() -> list[dict[str, Any]]:
    """The snapshots of this process's living children; stale files go."""
    path = _own_dir(create=False)
    if path is None:
        return []
    me = os.getpid()
    out = []
    for file in path.glob("*.json"):
        try:
            pid = int(file.stem)
        except ValueError:
            continue
        ps = proc_stat(pid)
        if ps is None:
            with contextlib.suppress(OSError):
                file.unlink()  # its process is gone
            continue
        if ps[0] != me:
            continue  # another worker's
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if data.get("pid") == pid and data.get("start_ticks") == ps[1]:
            out.append(data)
    return out


def _entry(proxy: dict[str, Any], now: float) -> dict[str, Any]:
    # Idleness from the last I/O, not the snapshot's age: a snapshot may be
    # up to REFRESH old.
    return {
        "pid": proxy["pid"],
        "owner_pid": proxy["owner_pid"],
        "command": proxy["command"],
        "age": round(now - proxy["started"], 1),
        "idle_seconds": round(max(0.0, now - proxy["last_io"]), 1),
        "bytes_in": proxy["bytes_in"],
        "bytes_out": proxy["bytes_out"],
        "state": proxy["state"],
    }


def report() -> dict[str, Any]:
    """Every proxy of this process and of its pool processes, as plain data."""
    now = time.time()
    mine = {
        "pid": os.getpid(),
        "stats": registry.stats(),
        "proxies": registry.proxies(),
    }
    processes = []
    for role, data in [("main", mine)] + [("pool", d) for d in _children_snapshots()]:
        processes.append(
            {
                "pid": data["pid"],
                "role": role,
                "stats": data["stats"],
                "proxies": [_entry(p, now) for p in data["proxies"]],
            }
        )
    processes.sort(key=lambda p: (p["role"] != "main", p["pid"]))
    return {
        "pid": os.getpid(),
        "proxies": sum(len(p["proxies"]) for p in processes),
        "processes": processes,
    }


def close_idle(seconds: float) -> dict[str, Any]:
    """Close the proxies idle for ``seconds`` here and in the pool processes."""
    here = registry.close_idle(seconds)
    now = time.time()
    signalled, refused = 0, []
    for data in _children_snapshots():
        for proxy in data["proxies"]:
            if proxy["state"] != "running" or now - proxy["last_io"] < seconds:
                continue
            why = terminate(proxy["pid"], proxy.get("start_ticks"), data["pid"])
            if why is None:
                signalled += 1
            else:
                refused.append({"pid": proxy["pid"], "reason": why})
    return {
        "closed": here + signalled,
        "main": here,
        "pool": signalled,
        "refused": refused,
    }


def terminate(pid: int, start_ticks: int | None, owner: int) -> str | None:
    """SIGTERM ``pid`` if it provably is that proxy; else why not."""
    if not _HAVE_PIDFD:
        return "no pidfd on this system"
    if start_ticks is None:
        return "no start time recorded"
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return "gone"
    try:
        # The pidfd was opened first: if /proc now shows the recorded start
        # time, the process it pins is the recorded one (it was alive
        # throughout), so the signal cannot reach a reused pid.
        ps = proc_stat(pid)
        if ps is None:
            return "gone"
        if ps[1] != start_ticks:
            return "start time differs: not the recorded proxy"
        if ps[0] != owner:
            return f"parent is {ps[0]}, not its owner {owner}"
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        return None
    except ProcessLookupError:
        return "gone"
    finally:
        os.close(fd)
