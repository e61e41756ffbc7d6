"""The Celery app of the end-to-end test: ``celery -A tests.celery_app.app worker``.

Its task runs a command through Fabric 3 with ``gateway="ssh -W ..."`` and
keeps the Connection in a module-level dict, one per pool process, as the
deploy workers of the incident did. The threads, gevent and eventlet pools
share it between their tasks; PFX_IN_STREAM=0 passes ``in_stream=False`` to
``run()``, which the eventlet pool needs (invoke's stdin thread fails there).
"""

from __future__ import annotations

import os
import threading
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
#: Tasks of one process (threads, greenlets) open the shared connection in turn.
_OPENING = threading.Lock()
_RUN_KWARGS: dict[str, Any] = (
    {"in_stream": False} if os.environ.get("PFX_IN_STREAM") == "0" else {}
)


@app.task(name="pfx.run")
def run(command: str) -> dict[str, Any]:
    """Run ``command`` on the target; report which process and proxy did it."""
    with _OPENING:
        conn = CONNECTIONS.get("target")
        if conn is None:
            conn = CONNECTIONS["target"] = fabric_connection()
        conn.open()  # reconnects once the proxy has died
    out = conn.run(command, hide=True, **_RUN_KWARGS).stdout.strip()
    return {"out": out, "pid": os.getpid(), "proxy": conn.transport.sock.process.pid}
