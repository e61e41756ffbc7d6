"""Helpers shared by the tests: a real sshd, an in-process SSH server, proxies.

Kept free of paramiko_proxyfix imports so the infrastructure can be checked
against upstream paramiko alone.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
PROXIES_DIR = TESTS_DIR / "proxies"

#: A proxy that ignores SIGTERM and stdin EOF; says "ready" once it does.
STUBBORN = shlex.join(
    [
        sys.executable,
        "-c",
        "import signal,sys,time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.stdout.write('ready'); sys.stdout.flush()\n"
        "time.sleep(60)",
    ]
)


def proxy_script(name: str) -> str:
    """Absolute path of a proxy program in tests/proxies (``name`` w/o .py)."""
    return str(PROXIES_DIR / f"{name}.py")


def proxy_cmd(name: str, *args: object) -> str:
    """Command line (a string, as ProxyCommand wants) running a test proxy."""
    return shlex.join([sys.executable, proxy_script(name), *map(str, args)])


def upstream_method(cls: type, name: str) -> object:
    """What ``cls.name`` was before install() (the current value if not patched)."""
    from paramiko_proxyfix import _patch

    return _patch._saved.get((cls, name), vars(cls)[name])


def wait_until(done: Callable[[], object], seconds: float) -> bool:
    """Ask ``done()`` with growing pauses (0.5 to 10 ms) for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    delay = 0.0005
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.01)
    return True


def ended(proxy: Any, seconds: float = 5.0) -> bool:
    """Wait up to ``seconds`` for a ProxyCommand's process to end (not reaped)."""
    return proxy._wait(seconds) is not None


def stderr_tail(proxy: Any) -> str:
    """What a fixed ProxyCommand kept of its proxy's stderr."""
    return str(proxy._exit_error(0).stderr_tail)
