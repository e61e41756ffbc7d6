"""The fleet-guard tests' app: the end-to-end app plus a task holding a proxy.

``celery -A tests.celery_app.guard_app worker``: ``pfx.hold`` starts one
``paramiko.ProxyCommand`` per pool process (a fake proxy program is enough:
the fleet view lists, and closes, whatever runs) and keeps it; a process
that holds one already keeps that one.
"""

from __future__ import annotations

import os
import time
from typing import Any

import paramiko

from tests.celery_app.app import app

__all__ = ["app", "hold"]

#: The proxy this pool process holds, never closed by a task.
HELD: dict[str, Any] = {}


@app.task(name="pfx.hold")
def hold(command: str, linger: float = 0.0) -> dict[str, Any]:
    """Hold a proxy running ``command``; stay busy ``linger`` seconds, so
    that a task sent meanwhile goes to another pool process."""
    proxy = HELD.get("proxy")
    if proxy is None:
        proxy = HELD["proxy"] = paramiko.ProxyCommand(command)
    time.sleep(linger)
    return {"pid": os.getpid(), "proxy": proxy.process.pid}
