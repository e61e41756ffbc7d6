"""``demo``: the incident without the fix and with it, side by side.

An SSH server runs in this process on loopback; two child processes (one with
``PARAMIKO_PROXYFIX_DISABLE=1``) connect to it through a relay proxy, kill the
proxy and measure. Children, because without the fix the client spins and
never notices: each child is capped and killed if it overruns.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from typing import Any

import paramiko

from .loopback import LoopbackServer

__all__ = ["render", "run_demo"]

#: Seconds to wait for the connection to notice the dead proxy.
DETECT_LIMIT = 3.0
#: Seconds over which the client's CPU use is measured after that.
CPU_WINDOW = 1.0
#: Banner timeout for the connect through a failing proxy (paramiko: 15 s).
BANNER_TIMEOUT = 3.0
#: Hard cap on one child, well above what it needs without the fix (~8 s).
CHILD_CAP = 25.0

_PACKAGE_PARENT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
_CHILD_CODE = "from paramiko_proxyfix.cli.incident import main; main()"
_COMMAND = re.compile(r"ProxyCommand\('[^']*'\)")


def _run_child(server: LoopbackServer, fixed: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PARAMIKO_PROXYFIX_DISABLE", None)
    if not fixed:
        env["PARAMIKO_PROXYFIX_DISABLE"] = "1"
    # The child must import this very copy of the package, installed or not.
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_PARENT + (os.pathsep + path if path else "")
    argv = [
        sys.executable,
        "-c",
        _CHILD_CODE,
        server.host,
        str(server.port),
        server.key.get_base64(),
        str(DETECT_LIMIT),
        str(CPU_WINDOW),
        str(BANNER_TIMEOUT),
    ]
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # so a cap can kill it with all it started
    )
    try:
        out, err = child.communicate(timeout=CHILD_CAP)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"crash": f"did not finish within {CHILD_CAP:.0f} s and was killed"}
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return {"crash": f"exit status {child.returncode}: {' / '.join(tail)}"}
    return result


def _problems(fixed: dict[str, Any]) -> list[str]:
    """Why the column "with the fix" does not show a working fix, if it does not."""
    if "crash" in fixed:
        return [f"the child with the fix failed: {fixed['crash']}"]
    if not fixed["fix_installed"]:
        return [f"the fix is not installed: {fixed['unsupported'] or 'unknown'}"]
    killed = fixed["killed"]
    problems = []
    if killed["detect_seconds"] is None:
        problems.append("the connection did not notice the dead proxy")
    if killed["zombie_after_close"]:
        problems.append("close() left a zombie")
    if killed["pipes_open_after_close"]:
        problems.append("close() left pipes open")
    return problems


def run_demo() -> dict[str, Any]:
    """Run both children against one loopback server; return all the figures."""
    with LoopbackServer() as server:
        without = _run_child(server, fixed=False)
        with_fix = _run_child(server, fixed=True)
    problems = _problems(with_fix)
    return {
        "paramiko": paramiko.__version__,
        "python": sys.version.split()[0],
        "detect_limit": DETECT_LIMIT,
        "cpu_window": CPU_WINDOW,
        "banner_timeout": BANNER_TIMEOUT,
        "without_fix": without,
        "with_fix": with_fix,
        "ok": not problems,
        "problems": problems,
    }


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _short(error: str | None) -> str:
    """An error without its command line, which the table has no room for."""
    return _COMMAND.sub("ProxyCommand(...)", error) if error else "none"


def _cells(result: dict[str, Any]) -> list[str]:
    """One column of the table, in the order of _LABELS."""
    if "crash" in result:
        return [result["crash"]] + [""] * (len(_LABELS) - 1)
    k, f = result["killed"], result["failing"]
    detect = k["detect_seconds"]
    waiter = k["waiter_seconds"]
    return [
        f"{k['cpu_after_kill'] * 100:.0f}% of a core",
        f"never (waited {DETECT_LIMIT:.0f} s)"
        if detect is None
        else _milliseconds(detect),
        (
            f"still blocked after {DETECT_LIMIT:.0f} s"
            if waiter is None
            else f"returned {k['waiter_status']} after {_milliseconds(waiter)}"
        ),
        _short(k["error"]),
        "1" if k["zombie_after_close"] else "0",
        str(k["pipes_open_after_close"]),
        f"fails after {_milliseconds(f['seconds'])}",
        _short(f["error"]),
    ]


_LABELS = [
    "CPU after the proxy is killed",
    "time until the connection ends",
    "caller in recv_exit_status()",
    "error the caller can see",
    "zombies after close()",
    "proxy pipes open after close()",
    "connect via a proxy that fails",
    "error raised by connect()",
]


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def render(report: dict[str, Any], width: int = 100) -> str:
    """The report as a table a person reads in a terminal."""
    label_w = 31
    col_w = (width - label_w - 4) // 2
    rows = [("", "without the fix", "with the fix")]
    rows += list(
        zip(_LABELS, _cells(report["without_fix"]), _cells(report["with_fix"]))
    )
    lines = [
        f"paramiko-proxyfix demo: paramiko {report['paramiko']}, "
        f"Python {report['python']}",
        "",
        "A client connects through a ProxyCommand (a relay standing in for",
        "`ssh -W`) to an SSH server on 127.0.0.1, starts a command, and the proxy",
        "is killed with SIGKILL, as an operator cleaning up stray `ssh -W` does.",
        "",
    ]
    for i, (label, left, right) in enumerate(rows):
        a = _wrap(left, col_w)
        b = _wrap(right, col_w)
        for n in range(max(len(a), len(b))):
            lines.append(
                f"{label if n == 0 else '':<{label_w}}  "
                f"{a[n] if n < len(a) else '':<{col_w}}  "
                f"{b[n] if n < len(b) else ''}".rstrip()
            )
        if i == 0:
            lines.append("-" * width)
    lines.append("")
    if report["ok"]:
        lines.append("The fix works here. Check a deployment with:")
        lines.append("  python -m paramiko_proxyfix check")
    else:
        lines.append("The fix did NOT work here: " + "; ".join(report["problems"]))
    return "\n".join(lines)
