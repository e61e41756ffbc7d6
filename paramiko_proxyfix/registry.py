"""This process's live proxies, held weakly: snapshots, counters, closing, idle closing.

Closing goes through each ProxyCommand's own close(), the one close
sequence. Closing many at once first sends SIGTERM to all and waits for them
together, so many proxies cost one close timeout, not one each: those still
running then are killed at once by their close().

With an idle timeout set, a thread closes proxies that had no I/O for that
long; it runs only while this process has proxies. Fork and exit are in
lifecycle.py. The lock is re-entrant: a signal handler may close proxies
while its thread is inside add().
"""

from __future__ import annotations

import math
import os
import select
import signal
import threading
import time
import weakref
from typing import Any, Callable

from .child import RUNNING
from .config import check_idle, current, env_idle_timeout
from .extras import Extras, extras_of
from .logs import log
from .redact import redact

__all__ = [
    "add",
    "add_listener",
    "arm_all",
    "close_all",
    "close_idle",
    "discard",
    "has_live",
    "live",
    "look_all",
    "proxies",
    "release_inherited",
    "reset_after_fork",
    "set_idle_timeout",
    "stats",
]

_lock = threading.RLock()
_live: weakref.WeakSet[Any] = weakref.WeakSet()
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


def add(proxy: Any) -> None:
    with _lock:
        _live.add(proxy)
        _counters["started"] += 1
    if _idle_timeout:
        _ensure_reaper()
    _changed()


def discard(proxy: Any, extras: Extras) -> None:
    """Forget a closed proxy, counting how it ended."""
    with _lock:
        if proxy not in _live:
            return
        _live.discard(proxy)
        code = extras.child.returncode
        if not extras.terminated:  # it ended before close() could end it
            signalled = code is not None and code < 0
            _counters["ended_by_signal" if signalled else "ended_by_exit"] += 1
        else:
            _counters["closed"] += 1
            if extras.child.killed:
                _counters["killed_after_timeout"] += 1
    if not has_live():
        _wake_reaper()  # it ends now, not after its sleep of up to a timeout
    _changed()


def add_listener(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after any proxy of this process is added or closed."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def live() -> list[Any]:
    """This process's live proxies; never one that a parent process owns."""
    me = os.getpid()
    with _lock:
        found = [(p, extras_of(p)) for p in _live]
    return [p for p, x in found if x is not None and x.child.owner_pid == me]


def has_live() -> bool:
    """Whether this process has a live proxy (cheap: the first one answers)."""
    me = os.getpid()
    with _lock:
        for p in _live:
            x = extras_of(p)
            if x is not None and x.child.owner_pid == me:
                return True
    return False


def look_all() -> None:
    """Look once at every live proxy: each that ended is then seen ended (not
    reaped), and a grown pipe of an idle one shrinks back. The spawner thread
    does it every WATCH_EVERY seconds; the read loop of one seen ended
    looks from then on (readloop.py)."""
    found = [x for x in map(extras_of, live()) if x is not None]
    now = time.monotonic()
    for x in found:
        x.io.idle(now)  # a grown pipe of an idle proxy shrinks back
    proxies = [x.child for x in found]
    fds = [c.pidfd for c in proxies if c.pidfd is not None]
    poller = getattr(select, "poll", None)
    if poller is not None and len(fds) == len(proxies):
        # A pidfd turns readable when its process exits: one poll() for all.
        watch = poller()
        for fd in fds:
            watch.register(fd, select.POLLIN)
        ended = {fd for fd, _ in watch.poll(0)}
        proxies = [c for c in proxies if c.pidfd in ended]
    for child in proxies:
        child.poll()
    for x in found:
        if x.arm is not None and x.child.state is not RUNNING:
            x.arm()  # its read loop looks from now on (readloop.py)
            x.arm = None


def arm_all() -> None:
    """No spawner thread looks any more: every read loop looks for itself."""
    for x in map(extras_of, live()):
        if x is not None and x.arm is not None:
            x.arm()
            x.arm = None


def stats() -> dict[str, int]:
    """Counters since this process started (or was forked): proxies started,
    closed by us while running, ended on their own (by an exit status or a
    signal), and killed because they outlived the close timeout."""
    with _lock:
        return dict(_counters)


def proxies() -> list[dict[str, Any]]:
    """A snapshot of this process's live proxies, one plain dict each; the
    command with password-like values hidden."""
    now = time.monotonic()
    wall = time.time()
    out = []
    for p in live():
        x = extras_of(p)
        assert x is not None
        code = x.child.poll()
        if code is None:
            state = "running"
        elif not x.child.status_known:
            state = "ended(unknown)"
        else:
            state = f"exited({code})"
        idle = now - x.io.last_io
        out.append(
            {
                "pid": x.child.pid,
                "owner_pid": x.child.owner_pid,
                "command": redact(x.argv),
                "started": x.started,
                "start_ticks": x.child.start_ticks,
                "age": wall - x.started,
                "idle_seconds": idle,
                "last_io": wall - idle,
                "bytes_in": x.io.bytes_in,
                "bytes_out": x.io.bytes_out,
                "state": state,
            }
        )
    return out


def close_all(timeout: float | None = None) -> int:
    """Close every live proxy of this process; return how many.

    All get SIGTERM before any is waited for; those still running after
    ``timeout`` (default: the close_timeout setting) get SIGKILL.
    """
    return _close(live(), timeout)


def check_seconds(seconds: object) -> float:
    """An idle time to close proxies after: a finite number > 0."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, not {seconds!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"seconds must be a finite number > 0, not {seconds!r} "
            "(close_all() closes every proxy)"
        )
    return float(seconds)


def close_idle(seconds: float, timeout: float | None = None) -> int:
    """Close the proxies with no I/O for ``seconds``; return how many."""
    cutoff = time.monotonic() - check_seconds(seconds)
    return _close([p for p in live() if _extras(p).io.last_io <= cutoff], timeout)


def _extras(proxy: Any) -> Extras:
    x = extras_of(proxy)
    assert x is not None
    return x


def _close(victims: list[Any], timeout: float | None) -> int:
    if not victims:
        return 0
    total = current().close_timeout if timeout is None else timeout
    for p in victims:
        if p._wait(0) is None:
            p._signal(signal.SIGTERM)
    deadline = time.monotonic() + total
    for p in victims:
        p._wait(max(0.0, deadline - time.monotonic()))
    for p in victims:
        # They have had their time: close() sends SIGKILL to any still running.
        p.close_timeout = 0.0
        p.close()
    return len(victims)


def release_inherited() -> int:
    """In a forked child: let go of the proxies a parent process left here;
    return how many. Their owner keeps them: this process closes its copies
    of the pipes and signals nothing."""
    global _live
    me = os.getpid()
    with _lock:
        inherited = [p for p in _live if _extras(p).child.owner_pid != me]
        _live = weakref.WeakSet(p for p in _live if p not in inherited)
    for p in inherited:
        x = _extras(p)
        x.child.release_inherited()
        if x.io.grown is not None:
            x.io.grown.forget()
        p.close()  # in a forked copy, close() only drops the pipes
    return len(inherited)


# -- idle timeout -------------------------------------------------------------

_idle_timeout: float = env_idle_timeout()
_reaper_lock = threading.Lock()
#: (pid, wake-up event, thread) of the reaper running in this process, if any.
_reaper: tuple[int, threading.Event, threading.Thread] | None = None


def set_idle_timeout(seconds: float | None) -> None:
    """Close proxies idle for ``seconds`` from now on (None or 0: never).

    A thread, started in each process while it has proxies, does it. The
    default comes from PARAMIKO_PROXYFIX_IDLE_TIMEOUT.
    """
    global _idle_timeout
    _idle_timeout = check_idle(seconds)
    _wake_reaper()  # recompute its deadline, or end
    if _idle_timeout and has_live():
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


def wake_reaper(join: float = 0.0) -> None:
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


_wake_reaper = wake_reaper


def _reap_idle(wake: threading.Event) -> None:
    global _reaper
    while True:
        seconds = _idle_timeout
        with _reaper_lock:  # re-checked under the lock that starts reapers
            if not _idle_timeout or not has_live():
                _reaper = None
                return
        try:
            close_idle(seconds)
        except Exception:
            log.exception("closing idle proxies failed")
        last = [_extras(p).io.last_io for p in live()]
        # Sleep until the least recently used proxy becomes idle, no longer.
        wait = min(last) + seconds - time.monotonic() if last else 0.0
        wake.wait(max(wait, 0.05))
        wake.clear()


def reset_after_fork() -> None:
    """In a forked child (see lifecycle.py): locks another parent thread may
    have held, and the parent's reaper thread, do not exist here."""
    global _lock, _reaper_lock, _reaper
    _lock = threading.RLock()
    _reaper_lock = threading.Lock()
    _reaper = None
    for key in _counters:
        _counters[key] = 0
