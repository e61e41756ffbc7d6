"""What the fix logs, and how paramiko's transport thread is kept quiet about it.

A proxy that ends is an operator's event, not a bug: the package logs one
WARNING line on the ``paramiko_proxyfix`` logger (command, pid, status, the
last stderr line). paramiko's transport thread would log the same end at
ERROR with a traceback ("Exception (client): ..."), printed to stderr by
Python's last-resort handler in an app that never configured logging. A
filter on paramiko's transport logger turns exactly those records, for an
exception this package raised in that thread, into one DEBUG line.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TypeVar

__all__ = ["QuietProxyEnd", "log", "note_end", "quiet_transport", "raising"]

log = logging.getLogger("paramiko_proxyfix")

#: The logger paramiko's Transport uses unless set_log_channel() changed it.
TRANSPORT_LOGGER = "paramiko.transport"

_local = threading.local()


_E = TypeVar("_E", bound=BaseException)


def raising(exc: _E) -> _E:
    """Remember that this thread is about to raise ``exc``, an expected end."""
    _local.expected = str(exc)
    _local.swallowing = False
    return exc


class QuietProxyEnd(logging.Filter):
    """Demotes paramiko's ERROR + traceback for an expected proxy end to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            _local.swallowing = False  # the traceback lines have all passed
            return True
        expected = getattr(_local, "expected", None)
        if expected is None:
            return True
        msg = record.msg
        if (
            isinstance(msg, str)
            and msg.startswith("Exception (")
            and msg.endswith(expected)
        ):
            # The traceback lines that follow, one record each, go too.
            _local.swallowing = True
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
            return True
        return not getattr(_local, "swallowing", False)


_filter = QuietProxyEnd()


def quiet_transport(on: bool) -> None:
    """Add (or remove) the filter on paramiko's transport logger."""
    logger = logging.getLogger(TRANSPORT_LOGGER)
    if on:
        if _filter not in logger.filters:
            logger.addFilter(_filter)
    else:
        logger.removeFilter(_filter)


def note_end(proxy: Any, returncode: int | None, stderr_tail: str) -> None:
    """One line for a proxy that ended by itself: WARNING unless it exited 0."""
    from .errors import describe_status

    lines = stderr_tail.replace("\r\n", "\n").strip().splitlines()
    last = f"; stderr: {lines[-1]}" if lines else ""
    level = logging.INFO if returncode == 0 else logging.WARNING
    log.log(
        level,
        "proxy %d (%s) %s%s",
        proxy.pid,
        proxy.command,
        describe_status(returncode),
        last,
    )
