"""The live proxies of this process, held weakly."""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .proxy import ProxyProcess

__all__ = ["add", "close_all", "close_idle", "discard", "live", "proxies"]

_lock = threading.Lock()
_live: weakref.WeakSet[ProxyProcess] = weakref.WeakSet()


def add(proxy: ProxyProcess) -> None:
    with _lock:
        _live.add(proxy)


def discard(proxy: ProxyProcess) -> None:
    with _lock:
        _live.discard(proxy)


def live() -> list[ProxyProcess]:
    with _lock:
        return list(_live)


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


def close_all() -> int:
    """Close every live proxy of this process; return how many."""
    return _close(live())


def close_idle(seconds: float) -> int:
    """Close the proxies with no I/O for ``seconds``; return how many."""
    cutoff = time.monotonic() - seconds
    return _close([p for p in live() if p.last_io <= cutoff])


def _close(victims: list[ProxyProcess]) -> int:
    for p in victims:
        p.close()
    return len(victims)
