"""A Celery app with the JSON result serializer, whose task raises the fix's errors.

``celery -A tests.json_app worker``: the caller checks what survives of each
exception on its way back through Redis.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import paramiko_proxyfix

app = Celery(
    "proxyfix_json",
    broker=os.environ["PFX_REDIS_URL"],
    backend=os.environ["PFX_REDIS_URL"],
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_time_limit=30,
)


@app.task(name="pfx.fail")
def fail(kind: str) -> Any:
    """Raise one of the fix's exceptions, the way the fix itself builds it."""
    from paramiko.proxy import ProxyCommand

    if kind == "exited":
        proxy = ProxyCommand("sh -c 'echo no route to host >&2; exit 255'")
        proxy.settimeout(10)
        try:
            proxy.recv(1)
        finally:
            proxy.close()
    if kind == "missing":
        ProxyCommand("/nonexistent/ssh -W target:22 bastion")
    if kind == "closed":
        proxy = ProxyCommand("cat")
        proxy.close()
        proxy.send(b"late")
    if kind == "foreign":
        raise paramiko_proxyfix.ProxyCommandForeign(
            "ssh -W t:22 b", "belongs to process 4242"
        )
    raise ValueError(kind)
