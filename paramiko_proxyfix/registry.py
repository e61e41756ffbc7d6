"""The live proxies of this process, held weakly, and what ends them.

- fork: the child releases every inherited proxy (closes its copies of the
  pipes, signals nothing) and starts from an empty registry;
- exit: atexit closes this process's proxies, all at once;
- idle: with an idle timeout set, a daemon thread closes proxies that had no
  I/O for that long.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .config import _env_float, current
from .spawn import forked_for_exec

if TYPE_CHECKING:
    from .proxy import ProxyProcess

__all__ = [
    "add",
    "close_all",
    "close_idle",
    "discard",
    "forget_inherited",
    "idle_timeout",
    "live",
    "proxies",
    "set_idle_timeout",
]

log = logging.getLogger("paramiko_proxyfix")

IDLE_ENV = "PARAMIKO_PROXYFIX_IDLE_TIMEOUT"

_lock = threading.Lock()
_live: weakref.WeakSet[ProxyProcess] = weakref.WeakSet()


def add(proxy: ProxyProcess) -> None:
    with _lock:
        _live.add(proxy)
    if _idle_timeout is not None:
        _ensure_reaper()


def discard(proxy: ProxyProcess) -> None:
    with _lock:
        _live.discard(proxy)


def live() -> list[ProxyProcess]:
    """This process's live proxies; never one that a parent process owns."""
    me = os.getpid()
    with _lock:
        return [p for p in _live if p.owner_pid == me]


def proxies() -> list[dict[str, Any]]:
    """A snapshot of this process's live proxies, one dict each."""
    now = time.monotonic()
    out = []
    for p in live():
        code = p.exit_status()
        out.append(
            {
                "pid": p.pid,
                "command": p.command,
                "started": p.started,
                "idle_seconds": now - p.last_io,
                "last_io": time.time() - (now - p.last_io),
                "bytes_in": p.bytes_in,
                "bytes_out": p.bytes_out,
                "state": "running" if code is None else f"exited({code})",
            }
        )
    return out


def close_all(timeout: float | None = None) -> int:
    """Close every live proxy of this process; return how many.

    All get SIGTERM before any is waited for, and SIGKILL at half of
    ``timeout`` (default: the close_timeout setting), so closing many costs
    one timeout, not one each.
    """
    return _close(live(), timeout)


def close_idle(seconds: float, timeout: float | None = None) -> int:
    """Close the proxies with no I/O for ``seconds``; return how many."""
    cutoff = time.monotonic() - seconds
    return _close([p for p in live() if p.last_io <= cutoff], timeout)


def _close(victims: list[ProxyProcess], timeout: float | None) -> int:
    total = current().close_timeout if timeout is None else timeout
    deadline = time.monotonic() + total
    # Another thread already closing one finishes it; leave it to that thread.
    mine = [p for p in victims if p.begin_close()]
    for p in mine:
        p.signal(signal.SIGTERM)
    _wait_exited(mine, deadline - total / 2)
    for p in mine:
        if p.exit_status() is None:
            p.signal(signal.SIGKILL)
    for p in mine:
        p.finish_close(max(0.0, deadline - time.monotonic()))
    return len(mine)


def _wait_exited(procs: list[ProxyProcess], until: float) -> None:
    delay = 0.0005
    while any(p.exit_status() is None for p in procs):
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.01)


def forget_inherited() -> int:
    """Release the proxies a parent process left here; return how many.

    Runs by itself in every child made by fork. Their owner keeps using them:
    the child only closes its copies of the pipes and signals nothing.
    """
    global _live
    me = os.getpid()
    with _lock:
        inherited = [p for p in _live if p.owner_pid != me]
        if inherited:
            _live = weakref.WeakSet(p for p in _live if p.owner_pid == me)
    for p in inherited:
        p.release_inherited()
    return len(inherited)


# -- idle timeout -------------------------------------------------------------

_idle_timeout: float | None = _env_float(IDLE_ENV, 0.0) or None
_reaper_lock = threading.Lock()
#: (pid, wake-up event) of the reaper thread running in this process, if any.
_reaper: tuple[int, threading.Event] | None = None


def idle_timeout() -> float | None:
    return _idle_timeout


def set_idle_timeout(seconds: float | None) -> None:
    """Close proxies idle for ``seconds`` from now on (None or 0: never).

    A daemon thread, started in each process that has proxies, does it. The
    default comes from PARAMIKO_PROXYFIX_IDLE_TIMEOUT.
    """
    global _idle_timeout
    if seconds is not None and seconds < 0:
        raise ValueError(f"idle timeout must not be negative, not {seconds!r}")
    _idle_timeout = seconds or None
    with _reaper_lock:
        reaper = _reaper
    if reaper is not None:
        reaper[1].set()  # recompute its deadline, or end
    if _idle_timeout is not None and live():
        _ensure_reaper()


def _ensure_reaper() -> None:
    global _reaper
    with _reaper_lock:
        if _reaper is not None and _reaper[0] == os.getpid():
            return
        wake = threading.Event()
        thread = threading.Thread(
            target=_reap_idle,
            args=(wake,),
            name="paramiko_proxyfix idle reaper",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no new threads at interpreter shutdown
            return
        _reaper = (os.getpid(), wake)


def _reap_idle(wake: threading.Event) -> None:
    global _reaper
    while True:
        seconds = _idle_timeout
        if seconds is None:
            with _reaper_lock:  # re-checked: it may have been set again
                if _idle_timeout is None:
                    _reaper = None
                    return
            continue
        try:
            close_idle(seconds)
        except Exception:
            log.exception("closing idle proxies failed")
        last = [p.last_io for p in live()]
        # Sleep until the least recently used proxy becomes idle, no longer.
        wait = min(last) + seconds - time.monotonic() if last else seconds
        wake.wait(max(wait, 0.05))
        wake.clear()


# -- fork and exit ------------------------------------------------------------


def _after_fork_in_child() -> None:
    # Only the forking thread survives: locks held by other parent threads
    # would stay held, and the parent's reaper thread does not exist here.
    global _lock, _reaper_lock, _reaper
    if forked_for_exec():
        return
    _lock = threading.Lock()
    _reaper_lock = threading.Lock()
    _reaper = None
    forget_inherited()


def _close_at_exit() -> None:
    close_all()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)


# -- BEGIN celery-branch stand-in: stats(), add_listener(), richer proxies() --
# A minimal version of the registry API the lead is adding on main; replace
# this whole block with main's when merging.

_stats = dict.fromkeys(
    ("started", "closed", "ended_by_exit", "ended_by_signal", "killed_after_timeout"),
    0,
)
_listeners: list[Any] = []
#: Proxies found still running when their close began, by id().
_closed_live: set[int] = set()
_add, _discard, _proxies = add, discard, proxies


def stats() -> dict[str, int]:
    """This process's counters since it started (or forked)."""
    return dict(_stats)


def add_listener(fn: Any) -> None:
    """Call ``fn()`` after any proxy is added or removed."""
    if fn not in _listeners:
        _listeners.append(fn)


def _notify() -> None:
    for fn in list(_listeners):
        try:
            fn()
        except Exception:
            log.exception("registry listener failed")


def add(proxy: ProxyProcess) -> None:  # type: ignore[no-redef]
    _wrap_begin_close(type(proxy))
    _add(proxy)
    _stats["started"] += 1
    _notify()


def discard(proxy: ProxyProcess) -> None:  # type: ignore[no-redef]
    with _lock:
        known = proxy in _live
    _discard(proxy)
    if known and proxy.owner_pid == os.getpid():
        code = proxy.exit_status()
        if id(proxy) in _closed_live:
            _closed_live.discard(id(proxy))
            key = "killed_after_timeout" if code == -signal.SIGKILL else "closed"
        else:
            signalled = code is not None and code < 0
            key = "ended_by_signal" if signalled else "ended_by_exit"
        _stats[key] += 1
    _notify()


def _wrap_begin_close(cls: Any) -> None:
    if getattr(cls.begin_close, "_pfx_counted", False):
        return
    original = cls.begin_close

    def begin_close(self: Any) -> bool:
        if self.exit_status() is None:
            _closed_live.add(id(self))
        return original(self)  # type: ignore[no-any-return]

    begin_close._pfx_counted = True  # type: ignore[attr-defined]
    cls.begin_close = begin_close


def _proc_start_time(pid: int) -> int | None:
    """/proc/<pid>/stat's starttime (clock ticks after boot), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def proxies() -> list[dict[str, Any]]:  # type: ignore[no-redef]
    """A snapshot of this process's live proxies, one dict each."""
    out = _proxies()
    now = time.time()
    for entry in out:
        entry["owner_pid"] = os.getpid()
        entry["age"] = now - entry["started"]
        entry["start_time"] = _proc_start_time(entry["pid"])
    return out


def _reset_stats_in_child() -> None:
    for key in _stats:
        _stats[key] = 0
    _closed_live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_stats_in_child)
# -- END celery-branch stand-in ------------------------------------------------
