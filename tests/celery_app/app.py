"""The Celery app of the end-to-end test: ``celery -A tests.celery_app.app worker``.

Its task runs a command through Fabric 3 with ``gateway="ssh -W ..."`` and
keeps the Connection in a module-level dict, one per pool process, as the
deploy workers of the incident did.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import paramiko_proxyfix.celery  # noqa: F401  -- the line the README asks for
from tests.celery_app.support import fabric_connection

app = Celery(
    "proxyfix_e2e",
    broker=os.environ["PFX_REDIS_URL"],
    backend=os.environ["PFX_REDIS_URL"],
)
app.conf.update(
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # A safety net: no test task may run longer than this.
    task_time_limit=30,
    result_expires=600,
)

#: One cached connection per pool process, never closed between tasks.
CONNECTIONS: dict[str, Any] = {}


@app.task(name="pfx.run")
def run(command: str) -> dict[str, Any]:
    """Run ``command`` on the target; report which process and proxy did it."""
    conn = CONNECTIONS.get("target")
    if conn is None:
        conn = CONNECTIONS["target"] = fabric_connection()
    out = conn.run(command, hide=True).stdout.strip()
    return {"out": out, "pid": os.getpid(), "proxy": conn.transport.sock.process.pid}
