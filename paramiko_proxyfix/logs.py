"""What the fix logs, and how paramiko's transport thread is kept quiet about it.

A proxy that ends by itself is an operator's event, not a bug: one line on
the ``paramiko_proxyfix`` logger (pid, command with secrets hidden, status,
the last stderr line), WARNING, or INFO for exit status 0. paramiko's
transport thread would log the same end at ERROR with a traceback
(``Exception (client): ...``), printed to stderr by Python's last-resort
handler in an app that never configured logging. A filter on paramiko's
transport logger turns exactly those records, for a proxy end this thread
just saw, into one DEBUG line.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from .redact import printable, redact
from .upstream.ssh_exception import ProxyCommandExited

__all__ = [
    "QuietProxyEnd",
    "describe",
    "log",
    "note_end",
    "quiet_transport",
    "unformatted_when_dropped",
]

log = logging.getLogger("paramiko_proxyfix")

#: The logger paramiko's Transport uses unless set_log_channel() changed it.
TRANSPORT_LOGGER = "paramiko.transport"

_local = threading.local()


class QuietProxyEnd(logging.Filter):
    """Demotes paramiko's ERROR + traceback for an expected proxy end to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            _local.swallowing = False  # the traceback lines have all passed
            return True
        expected = getattr(_local, "expected", None)
        msg = record.msg
        if (
            expected is not None
            and isinstance(msg, str)
            and msg.startswith("Exception (")
            and expected in msg
        ):
            # The traceback lines that follow, one record each, go too.
            _local.expected = None
            _local.swallowing = True
            record.levelno = logging.DEBUG
            record.levelname = "DEBUG"
            return True
        return not getattr(_local, "swallowing", False)


_filter = QuietProxyEnd()


def unformatted_when_dropped(
    original: Callable[[], list[str]],
) -> Callable[[], list[str]]:
    """Wrap ``paramiko.util.tb_strings``: the traceback the transport logs
    after a proxy end that the filter drops is not formatted at all (that
    took half of the time from a proxy's death to the transport's end)."""

    def tb_strings() -> list[str]:
        if getattr(_local, "swallowing", False):
            return []
        return original()

    tb_strings.__wrapped__ = original  # type: ignore[attr-defined]
    tb_strings.__doc__ = original.__doc__
    return tb_strings


def quiet_transport(on: bool) -> None:
    """Add (or remove) the filter on paramiko's transport logger."""
    logger = logging.getLogger(TRANSPORT_LOGGER)
    if on:
        if _filter not in logger.filters:
            logger.addFilter(_filter)
    else:
        logger.removeFilter(_filter)


def describe(returncode: int | None, status_known: bool = True) -> str:
    """How a proxy ended, from its status (negative: the signal)."""
    if not status_known or returncode is None:
        return "ended; another part of this process collected its exit status"
    # The exception's own wording, signal names included.
    return str(ProxyCommandExited("", returncode).error)


def note_end(
    pid: int, argv: list[str], returncode: int, status_known: bool, stderr: str
) -> None:
    """One line for a proxy that ended by itself; the transport's ERROR for the
    exception about to be raised in this thread becomes DEBUG."""
    if returncode != 0 and status_known:
        _local.expected = f'ProxyCommand("{" ".join(argv)}") '
        _local.swallowing = False
    lines = stderr.replace("\r\n", "\n").strip().splitlines()
    last = f"; stderr: {printable(lines[-1])}" if lines else ""
    level = logging.WARNING if returncode != 0 or not status_known else logging.INFO
    log.log(
        level,
        "proxy %d (%s) %s%s",
        pid,
        printable(redact(argv)),
        describe(returncode, status_known),
        last,
    )
