"""The live proxies of this process, held weakly, what ends them, and counters.

- fork: the child releases every inherited proxy (closes its copies of the
  pipes, signals nothing) and starts from an empty registry;
- exit: every proxy gets SIGTERM before any is waited for, when the
  interpreter (or a sub-interpreter) shuts its threads down, so closing many
  costs one close timeout;
- idle: with an idle timeout set, a thread closes proxies that had no I/O
  for that long; it ends when no proxy is left.

The lock is re-entrant: a signal handler may call close_all() while its
thread is inside add().
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from .config import check, current, env_seconds
from .logs import log

if TYPE_CHECKING:
    from .process import ProxyProcess

__all__ = [
    "IDLE_ENV",
    "add",
    "add_listener",
    "close_all",
    "close_idle",
    "discard",
    "forget_inherited",
    "has_live",
    "live",
    "proxies",
    "set_idle_timeout",
    "stats",
]

IDLE_ENV = "PARAMIKO_PROXYFIX_IDLE_TIMEOUT"

_lock = threading.RLock()
_live: weakref.WeakSet[ProxyProcess] = weakref.WeakSet()
_counters = dict.fromkeys(
    ("started", "closed", "ended_by_exit", "ended_by_signal", "killed_after_timeout"),
    0,
)
_listeners: list[Callable[[], None]] = []


def _changed() -> None:
    for listener in list(_listeners):
        try:
            listener()
        except Exception:
            log.debug("a registry listener failed", exc_info=True)


def add(proxy: ProxyProcess) -> None:
    with _lock:
        _live.add(proxy)
        _counters["started"] += 1
    if _idle_timeout is not None:
        _ensure_reaper()
    _changed()


def discard(proxy: ProxyProcess) -> None:
    """Forget a closed proxy, counting how it ended."""
    with _lock:
        if proxy not in _live:
            return
        _live.discard(proxy)
        code = proxy.returncode
        if proxy.ended_before_close:
            signalled = code is not None and code < 0
            _counters["ended_by_signal" if signalled else "ended_by_exit"] += 1
        else:
            _counters["closed"] += 1  # by us, while it ran
            if proxy.killed:
                _counters["killed_after_timeout"] += 1
    if not has_live():
        _wake_reaper()  # it ends now, not after its sleep of up to a timeout
    _changed()


def add_listener(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after any proxy of this process is added or closed."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def live() -> list[ProxyProcess]:
    """This process's live proxies; never one that a parent process owns."""
    me = os.getpid()
    with _lock:
        return [p for p in _live if p.owner_pid == me]


def has_live() -> bool:
    return bool(live())


def stats() -> dict[str, int]:
    """Counters of this process since it started (or was forked): proxies
    started, closed by us while running, ended on their own (by an exit
    status or a signal), and killed because they outlived the close timeout."""
    with _lock:
        return dict(_counters)


def proxies() -> list[dict[str, Any]]:
    """A snapshot of this process's live proxies, one plain dict each."""
    now = time.monotonic()
    wall = time.time()
    out = []
    for p in live():
        idle = now - p.pipes.last_io
        if not p.poll_status():
            state = "running"
        elif p.returncode is None:
            state = "ended(unknown)"
        else:
            state = f"exited({p.returncode})"
        out.append(
            {
                "pid": p.pid,
                "owner_pid": p.owner_pid,
                "command": p.command,
                "started": p.started,
                "start_ticks": p.start_ticks,
                "age": wall - p.started,
                "idle_seconds": idle,
                "last_io": wall - idle,
                "bytes_in": p.pipes.bytes_in,
                "bytes_out": p.pipes.bytes_out,
                "state": state,
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
    return _close([p for p in live() if p.pipes.last_io <= cutoff], timeout)


def _close(victims: list[ProxyProcess], timeout: float | None) -> int:
    if not victims:
        return 0  # also where the fix never ran: process.py may not import
    from .process import terminate_all

    total = current().close_timeout if timeout is None else timeout
    deadline = time.monotonic() + total
    # Another thread already closing one finishes it; leave it to that thread.
    mine = [p for p in victims if p.begin_close()]
    terminate_all(mine, total)
    for p in mine:  # all have ended (or been given up on): no waiting here
        p.finish_close(max(0.0, deadline - time.monotonic()))
    return len(mine)


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

_idle_timeout: float | None = env_seconds(IDLE_ENV, 0.0) or None
_reaper_lock = threading.Lock()
#: (pid, wake-up event, thread) of the reaper running in this process, if any.
_reaper: tuple[int, threading.Event, threading.Thread] | None = None


def set_idle_timeout(seconds: float | None) -> None:
    """Close proxies idle for ``seconds`` from now on (None or 0: never).

    A thread, started in each process while it has proxies, does it. The
    default comes from PARAMIKO_PROXYFIX_IDLE_TIMEOUT.
    """
    global _idle_timeout
    if seconds is not None:
        check("idle timeout", seconds)
    _idle_timeout = seconds or None
    _wake_reaper()  # recompute its deadline, or end
    if _idle_timeout is not None and has_live():
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
        _reaper = (os.getpid(), wake, thread)


def _wake_reaper(join: float = 0.0) -> None:
    """Make the reaper look again (it ends if nothing is left to watch), and
    wait up to ``join`` seconds for it to end.

    No lock: a signal handler may close a proxy while its thread is in
    _ensure_reaper().
    """
    reaper = _reaper
    if reaper is None or reaper[0] != os.getpid():
        return
    reaper[1].set()
    if join and reaper[2] is not threading.current_thread():
        reaper[2].join(join)


def _reap_idle(wake: threading.Event) -> None:
    global _reaper
    while True:
        seconds = _idle_timeout
        with _reaper_lock:  # re-checked under the lock that starts reapers
            if _idle_timeout is None or not has_live():
                _reaper = None
                return
        assert seconds is not None
        try:
            close_idle(seconds)
        except Exception:
            log.exception("closing idle proxies failed")
        last = [p.pipes.last_io for p in live()]
        # Sleep until the least recently used proxy becomes idle, no longer.
        wait = min(last) + seconds - time.monotonic() if last else 0.0
        wake.wait(max(wait, 0.05))
        wake.clear()


# -- fork and exit ------------------------------------------------------------


def _after_fork_in_child() -> None:
    # Only the forking thread survives: locks held by other parent threads
    # would stay held, and the parent's reaper thread does not exist here.
    global _lock, _reaper_lock, _reaper
    from .spawn import forked_for_exec

    if forked_for_exec():
        return
    _lock = threading.RLock()
    _reaper_lock = threading.Lock()
    _reaper = None
    for key in _counters:
        _counters[key] = 0
    forget_inherited()


def _at_exit() -> None:
    """Close every proxy at once, then end our threads."""
    close_all()
    _wake_reaper(join=1.0)
    # No spawner without spawn.py; on a platform the fix refused, it may not
    # even import (no subprocess).
    spawn = sys.modules.get(f"{__package__}.spawn")
    if spawn is not None:
        spawn.stop_spawner()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
# threading's own exit hooks run when the interpreter, or a sub-interpreter,
# shuts its threads down: before our threads would keep it from ending.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    with contextlib.suppress(RuntimeError):  # already shutting down
        _register(_at_exit)
atexit.register(_at_exit)
