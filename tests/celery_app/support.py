"""Helpers for the worker-lifecycle tests and the processes they start.

SSH settings travel in the environment (``PFX_*``), so a Celery pool child or
a scenario process can reach the session's sshd without pytest. ``Owner`` runs
a Python child that reports on stdout and is then killed by the test, as a
hard time limit or an operator would.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from tests.support import REPO_ROOT, capped

if TYPE_CHECKING:  # not at run time: pool children need no sshd code
    from tests.support.sshd import Sshd


def ssh_env(sshd: Sshd, fixed: bool | None = None) -> dict[str, str]:
    """What a child needs to log in to ``sshd`` through a real ``ssh -W``.

    With ``fixed``, also whether ``import paramiko_proxyfix`` installs the fix.
    """
    env = sshd.login_env("PFX_", proxy_name="GATEWAY")
    if fixed is not None:
        env["PARAMIKO_PROXYFIX_DISABLE"] = "" if fixed else "1"
    return env


def scenario_report(sshd: Sshd, code: str, fixed: bool, cap: float) -> dict[str, Any]:
    """Run ``code`` capped against ``sshd``, with the fix or without it.

    Returns the last JSON line it printed, after checking that its
    ``installed`` says what was asked: a scenario must not pass by accident.
    """
    result = capped.run_capped(code, cap, ssh_env(sshd, fixed))
    lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines, (result.timed_out, result.stderr[-3000:])
    data: dict[str, Any] = json.loads(lines[-1])
    assert data["installed"] is fixed
    return data


def ssh_client(sock: Any = None) -> Any:
    """An SSHClient logged in through ``sock`` (default: the PFX_GATEWAY proxy)."""
    import paramiko

    env = os.environ
    client = paramiko.SSHClient()
    client.load_host_keys(env["PFX_KNOWN_HOSTS"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        env["PFX_HOST"],
        int(env["PFX_PORT"]),
        username=env["PFX_USER"],
        key_filename=env["PFX_KEY"],
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
        sock=sock or paramiko.ProxyCommand(env["PFX_GATEWAY"]),
    )
    return client


def fabric_connection() -> Any:
    """A Fabric 3 Connection with ``gateway=PFX_GATEWAY``, not opened yet."""
    import paramiko
    from fabric import Config, Connection

    env = os.environ
    conn = Connection(
        env["PFX_HOST"],
        port=int(env["PFX_PORT"]),
        user=env["PFX_USER"],
        gateway=env["PFX_GATEWAY"],
        connect_timeout=10,
        connect_kwargs={
            "key_filename": env["PFX_KEY"],
            "allow_agent": False,
            "look_for_keys": False,
            "banner_timeout": 10,
        },
        config=Config(runtime_ssh_path=os.devnull),
    )
    conn.client.load_host_keys(env["PFX_KNOWN_HOSTS"])
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ plus ``env``, with the repo importable."""
    full = dict(os.environ)
    full.update(env or {})
    path = full.get("PYTHONPATH")
    full["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return full


def proc_pid_alive(pid: int) -> bool:
    """Running or sleeping: not gone and not a zombie."""
    return capped.proc_state(pid) not in (None, "Z")


def seconds_until_gone(pid: int, since: float, cap: float) -> float | None:
    """Wait for ``pid`` to end; seconds from ``since`` (monotonic), None if alive."""
    deadline = since + cap
    while proc_pid_alive(pid):
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)
    return time.monotonic() - since


class Owner:
    """A Python child that prints one JSON line, then waits to be killed.

    Everything it leaves behind (its descendants, and the pids it reports
    under ``"pids"``) is SIGKILLed on exit from the ``with`` block.
    """

    def __init__(self, code: str, env: dict[str, str] | None = None) -> None:
        self.code = code
        self.env = child_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.report: dict[str, Any] = {}
        self._tree: set[int] = set()

    def __enter__(self) -> Owner:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        try:
            self.report = json.loads(self._first_line(30.0))
        except BaseException:
            self.__exit__()
            raise
        self._tree.update(capped.descendants(self.proc.pid))
        self._tree.update(self.report.get("pids", []))
        return self

    def _first_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(out.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
        if b"\n" not in buf:
            self.kill()
            err = self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(
                f"owner reported nothing: {buf!r}\n{err.decode(errors='replace')}"
            )
        return buf.split(b"\n", 1)[0].decode()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> float:
        """SIGKILL the owner alone and reap it; return when it was sent."""
        assert self.proc is not None
        self._tree.update(capped.descendants(self.proc.pid))
        sent = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return sent

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self._tree.update(capped.descendants(self.proc.pid))
        if self.proc.poll() is None:
            self.kill()
        capped.kill_pids(self._tree)
        capped.wait_gone(self._tree, timeout=3.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
