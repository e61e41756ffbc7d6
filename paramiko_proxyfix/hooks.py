"""The worker extras, on the fix's override points: what install() puts on ProxyCommand.

The fix (``upstream/proxy.py``, or paramiko's own ``proxy.py`` when it was
built from ``patches/``) names how its command is started, signalled, waited
for, read and written, and three moments (started, ended, closed). These
functions fill them in; they never replace ``recv``, ``send`` or ``close``.

- ``_spawn``: the death signal and a session of its own (spawn.py);
- ``_signal`` / ``_wait``: the proxy's one state and the signalling gate
  (child.py, gate.py): its group, proved at each signal; no early reaping;
- ``_read`` / ``_write``: read-ahead, traffic counters, pipe growth
  (readahead.py, pipesize.py);
- ``_on_started`` / ``_on_ended`` / ``_on_closed``: the registry (fork, exit,
  idle), one log line per proxy end, reaping what close() ended;
- ``__del__``: a ProxyCommand dropped without close() is closed on the
  spawner thread, never on the thread that runs the garbage collector.

A ProxyCommand these functions did not start (a paramiko built from patches/
made it before install()) has no extras: it gets the fix's own defaults.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from . import registry, spawn
from .config import current
from .extras import ATTR, Extras, extras_of
from .logs import log, note_end

__all__ = ["EXTRAS", "FIX", "limits"]

#: How long close() waits, at most, for a proxy it had to SIGKILL to die.
KILL_GRACE = 0.5


# The fix's own methods, for instances without extras: filled by install().
FIX: dict[str, Any] = {}


def _spawn(self: Any, argv: list[str]) -> Any:
    process, own_group = spawn.spawn(argv)
    try:
        self.__dict__[ATTR] = Extras(argv, process, own_group)
    except BaseException:
        # No descriptor or process left behind by a failure here.
        process.kill()
        process.wait(KILL_GRACE)
        for pipe in (process.stdin, process.stdout, process.stderr):
            pipe.close()
        raise
    return process


def _signal(self: Any, sig: int) -> None:
    extras = extras_of(self)
    if extras is None:
        FIX["_signal"](self, sig)
        return
    if sig == signal.SIGTERM:
        extras.terminated = True
    extras.child.signal(sig)


def _wait(self: Any, timeout: float) -> int | None:
    extras = extras_of(self)
    if extras is None:
        return FIX["_wait"](self, timeout)  # type: ignore[no-any-return]
    return extras.child.wait(timeout)


def _read(self: Any, size: int) -> bytes | None:
    extras = extras_of(self)
    if extras is None:
        return FIX["_read"](self, size)  # type: ignore[no-any-return]
    return extras.io.read(size)


def _write(self: Any, data: bytes) -> int | None:
    extras = extras_of(self)
    if extras is None:
        return FIX["_write"](self, data)  # type: ignore[no-any-return]
    return extras.io.write(data)


def _on_started(self: Any) -> None:
    extras = extras_of(self)
    if extras is not None:
        registry.add(self)


def _on_ended(self: Any, status: int) -> None:
    extras = extras_of(self)
    if extras is None or extras.noted:
        return
    extras.noted = True
    child = extras.child
    tail = self._exit_error(status).stderr_tail
    note_end(child.pid, extras.argv, status, child.status_known, tail)


def _on_closed(self: Any) -> None:
    extras = extras_of(self)
    if extras is None:
        return
    child = extras.child
    if child.killed and child.wait(KILL_GRACE) is None:
        log.warning("proxy %d did not die after SIGKILL", child.pid)
    child.finish()
    extras.io.release()
    extras.closed = True
    registry.discard(self, extras)


def __del__(self: Any) -> None:
    # The collector may run in any thread, even one that holds a lock this
    # proxy's close() would wait for: close it on the spawner thread. The
    # job's reference keeps this object alive until then (PEP 442).
    extras = self.__dict__.get(ATTR)
    if extras is None or extras.closed or extras.child.owner_pid != os.getpid():
        return
    try:
        spawn.run_in_background(self.close)
    except Exception:  # at interpreter shutdown, say
        log.debug("closing a collected proxy failed", exc_info=True)


#: The override points install() fills, in the order it sets them.
EXTRAS = {
    "_spawn": _spawn,
    "_signal": _signal,
    "_wait": _wait,
    "_read": _read,
    "_write": _write,
    "_on_started": _on_started,
    "_on_ended": _on_ended,
    "_on_closed": _on_closed,
    "__del__": __del__,
}


def limits() -> dict[str, float]:
    """The fix's class attributes that hold the configured limits."""
    settings = current()
    return {
        "close_timeout": settings.close_timeout,
        "eof_timeout": settings.eof_grace,
        "stderr_limit": settings.stderr_tail,
    }
