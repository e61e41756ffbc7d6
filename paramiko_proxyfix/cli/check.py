"""``check``: prove, in this interpreter, that the fix is on and works.

For deploy pipelines and health checks: it passes only after a real proxy was
killed under a real connection, the connection ended, and close() reaped the
proxy, against whichever paramiko is installed now.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import paramiko

from .. import _patch
from ..config import disabled_by_env
from .incident import killed_proxy
from .loopback import LoopbackServer

__all__ = ["render", "run_check"]

#: Seconds the connection gets to notice the killed proxy (it needs ~10 ms).
DETECT_LIMIT = 2.0


def _step(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def _preconditions() -> list[dict[str, Any]]:
    if disabled_by_env():
        return [
            _step(
                "enabled",
                False,
                "PARAMIKO_PROXYFIX_DISABLE is set, so the fix is off; "
                "unset it to turn the fix on",
            )
        ]
    reason = _patch.unsupported_platform()
    if reason is not None:
        return [
            _step(
                "platform",
                False,
                f"{reason}; the fix needs a POSIX system (Linux) whose Python "
                "has fcntl, subprocess and select.poll (or eventlet's select)",
            )
        ]
    reason = _patch.unsupported_reason()
    if reason is not None:
        return [
            _step("supported", False, f"{reason}; supported: {_patch.SUPPORTED_TEXT}")
        ]
    steps = [
        _step("enabled", True, "PARAMIKO_PROXYFIX_DISABLE is not set"),
        _step(
            "supported",
            True,
            f"paramiko {paramiko.__version__} ({_patch.SUPPORTED_TEXT})",
        ),
    ]
    if not _patch.is_installed():
        steps.append(
            _step("installed", False, "paramiko_proxyfix.uninstall() was called")
        )
    else:
        steps.append(_step("installed", True, "paramiko.proxy.ProxyCommand is patched"))
    return steps


def _live_steps() -> list[dict[str, Any]]:
    # The transport logs the killed proxy at ERROR: expected here.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    try:
        with LoopbackServer() as server:
            r = killed_proxy(
                server.host,
                server.port,
                server.key.get_base64(),
                DETECT_LIMIT,
                0.0,
            )
    except Exception as exc:  # any failure here is the answer, not a crash
        return [_step("proxy death", False, f"the test connection failed: {exc!r}")]
    detect = r["detect_seconds"]
    if detect is None:
        ended = _step(
            "proxy death",
            False,
            f"the connection did not end within {DETECT_LIMIT:.0f} s of its "
            "proxy being killed",
        )
    else:
        ended = _step(
            "proxy death",
            "ProxyCommandExited" in (r["error"] or ""),
            f"the connection ended {detect * 1000:.0f} ms after its proxy was "
            f"killed; the error: {r['error']}",
        )
    leftovers = []
    if r["zombie_after_close"]:
        leftovers.append("a zombie")
    if r["pipes_open_after_close"]:
        leftovers.append(f"{r['pipes_open_after_close']} open pipes")
    reaped = _step(
        "close",
        not leftovers,
        "close() left " + " and ".join(leftovers)
        if leftovers
        else "close() reaped the proxy and closed its pipes",
    )
    return [ended, reaped]


def run_check() -> dict[str, Any]:
    """Every step and its outcome; ``ok`` only if all passed."""
    steps = _preconditions()
    if all(s["ok"] for s in steps):
        steps += _live_steps()
    failed = [s for s in steps if not s["ok"]]
    return {
        "ok": not failed,
        "paramiko": paramiko.__version__,
        "python": sys.version.split()[0],
        "steps": steps,
        "reason": failed[0]["detail"] if failed else None,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"paramiko-proxyfix check: paramiko {report['paramiko']}, "
        f"Python {report['python']}"
    ]
    for s in report["steps"]:
        lines.append(f"  {'ok  ' if s['ok'] else 'FAIL'}  {s['name']}: {s['detail']}")
    if report["ok"]:
        lines.append("OK: the fix is installed and works")
    else:
        lines.append(f"FAILED: {report['reason']}")
    return "\n".join(lines)
