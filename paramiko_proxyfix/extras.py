"""What the shim keeps for each ProxyCommand it started, on the instance.

The fix's own state stays the fix's: the shim reads and changes nothing of
it, and keeps its own beside it, under one attribute (:data:`ATTR`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .child import ProxyChild
from .readahead import ReadAhead

__all__ = ["ATTR", "Extras", "extras_of"]

#: Where a ProxyCommand keeps its Extras.
ATTR = "_proxyfix"


class Extras:
    """What the shim keeps for one ProxyCommand it started."""

    def __init__(self, argv: list[str], process: Any, own_group: bool) -> None:
        self.argv = argv
        self.child = ProxyChild(process, own_group)
        self.io = ReadAhead(process.stdout.fileno(), process.stdin.fileno())
        self.started = time.time()
        #: close() sent SIGTERM: it ran until then (else it ended by itself).
        self.terminated = False
        self.noted = False
        self.closed = False
        #: Idle ticks since the read-loop hook last asked whether it ended.
        self.ticks = 0
        #: Puts the exit check on its connection's read loop (readloop.py).
        self.arm: Callable[[], None] | None = None


def extras_of(proxy: Any) -> Extras | None:
    extras: Extras | None = proxy.__dict__.get(ATTR)
    return extras
