"""Celery integration: no proxy outlives its pool process or its worker.

``import paramiko_proxyfix.celery`` (in the module that creates the Celery
app) installs the fix and connects these handlers to Celery's signals:

- ``worker_init``, ``worker_process_init``: apply the idle timeout, from the
  environment variable PARAMIKO_PROXYFIX_IDLE_TIMEOUT or else the Celery
  setting ``paramiko_proxyfix_idle_timeout`` (seconds, 0: never). A pool
  child also releases any proxy its parent left in it, although the fork
  hook has normally done so already.
- ``worker_process_shutdown``, ``worker_shutdown``: close every proxy of the
  process. A hard time limit gives a pool child 0.1 s between SIGTERM and
  SIGKILL, so all proxies are signalled at once and waited for only
  SHUTDOWN_TIMEOUT. A task still inside Fabric's ``run()`` often never gets
  here (invoke waits for its reader threads): then the SIGKILL ends the pool
  child, and the parent-death signal set up at spawn ends its proxies.

And two remote-control commands, answered by each worker's main process for
itself and its pool processes (see fleet.py):

- ``celery -A proj inspect proxyfix_proxies``: every proxy, with its owner
  pid, command, age, idle seconds, bytes in/out and state, and each
  process's counters;
- ``celery -A proj control proxyfix_close_idle SECONDS``: close the proxies
  idle for that long; answers how many. SECONDS must be a finite number > 0
  (``close_all()`` closes everything): anything else is answered, before
  anything is closed, with ``{"error": "why"}``, as Celery's own commands
  answer errors.

A main process whose run directory is refused answers ``"blind": why``.
"""

from __future__ import annotations

import logging
from typing import Any

# An absolute import: the real Celery, never this module.
from celery import signals
from celery.worker.control import control_command, inspect_command

from . import fleet, registry
from .config import env_idle_timeout

__all__ = [
    "SETTING",
    "SHUTDOWN_TIMEOUT",
    "close_on_shutdown",
    "connect",
    "proxyfix_close_idle",
    "proxyfix_proxies",
]

log = logging.getLogger("paramiko_proxyfix")

#: Seconds a shutdown may wait for proxies, well inside billiard's 0.1 s.
SHUTDOWN_TIMEOUT = 0.05
#: The Celery setting holding the idle timeout.
SETTING = "paramiko_proxyfix_idle_timeout"


def _apply_idle_timeout(app: Any) -> None:
    seconds = env_idle_timeout(-1.0)
    if seconds < 0:  # unset: the Celery setting decides
        conf = getattr(app, "conf", None)
        raw = conf.get(SETTING) if conf is not None else None
        try:
            registry.set_idle_timeout(float(raw) if raw else 0.0)
        except (TypeError, ValueError) as exc:
            log.warning("the Celery setting %s: %s; no idle timeout", SETTING, exc)
        return
    registry.set_idle_timeout(seconds)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    _apply_idle_timeout(getattr(sender, "app", None))


def _on_process_init(**_: Any) -> None:
    released = registry.release_inherited()
    if released:
        log.debug("released %d proxies inherited from the parent", released)
    # The pool child has made the worker's app current before this signal.
    from celery import current_app

    _apply_idle_timeout(current_app)
    fleet.enable_publishing()


def close_on_shutdown(**_: Any) -> None:
    """Close every proxy of this process within SHUTDOWN_TIMEOUT."""
    closed = registry.close_all(timeout=SHUTDOWN_TIMEOUT)
    fleet.withdraw()
    if closed:
        log.debug("closed %d proxies at shutdown", closed)


def connect() -> None:
    """Connect the handlers; done on import, and safe to repeat."""
    for celery_signal, handler in (
        (signals.worker_init, _on_worker_init),
        (signals.worker_process_init, _on_process_init),
        (signals.worker_process_shutdown, close_on_shutdown),
        (signals.worker_shutdown, close_on_shutdown),
    ):
        celery_signal.connect(
            handler, weak=False, dispatch_uid=f"paramiko_proxyfix.{celery_signal.name}"
        )


@inspect_command()  # type: ignore[untyped-decorator]
def proxyfix_proxies(state: Any, **_: Any) -> dict[str, Any]:
    """The proxies of this worker and of its pool processes."""
    return fleet.report()


def _number(seconds: object) -> object:
    """The CLI's text as a number (the worker, not the CLI, says what is wrong
    with it); anything else as it came, for registry.check_seconds to judge."""
    if isinstance(seconds, str):
        try:
            return float(seconds)
        except ValueError:
            raise ValueError(
                f"seconds must be a finite number > 0, not {seconds!r}"
            ) from None
    return seconds


# The CLI sends its argument as text: ``float`` there would stop
# ``proxyfix_close_idle abc`` with a traceback in the CLI, and send NaN and
# Infinity as JSON that is not JSON.
@control_command(  # type: ignore[untyped-decorator]
    args=[("seconds", str)], signature="<seconds>"
)
def proxyfix_close_idle(state: Any, seconds: object = None, **_: Any) -> dict[str, Any]:
    """Close the proxies with no I/O for SECONDS (a finite number > 0), in the
    pool processes too."""
    try:
        limit = registry.check_seconds(_number(seconds))  # the rule fleet applies
    except (TypeError, ValueError) as exc:
        # Celery's own commands answer errors so (celery.worker.control.nok).
        return {"error": f"proxyfix_close_idle: {exc}"}
    return {"ok": fleet.close_idle(limit)}


connect()
