"""ansible-core's paramiko connection plugin with a ProxyCommand, proxy killed.

``ansible all -i 127.0.0.1, -c paramiko`` with ``ANSIBLE_PARAMIKO_PROXY_COMMAND``
set runs ``echo hi``, then a ``sleep`` during which the connection is idle;
the ``ssh -W`` is SIGKILLed while the task waits. The task must fail at once
(ansible exits instead of waiting for the sleep), the worker that held the
connection must not spin, and no proxy may be left. Ansible is started both
through ``python -m paramiko_proxyfix run -- ansible`` and through a wrapper
script that imports the fix (tests/clients/ansible_with_fix.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.celery_app.support import ssh_env
from tests.support import capped
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(150)

#: The remote command the proxy dies under; its odd length finds it in /proc.
SLEEP = "sleep 61.25"


def scenario() -> None:
    """Runs in the capped child; PFX_ANSIBLE_VIA is ``run`` or ``wrapper``."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from tests.clients import support
    from tests.support import capped

    env = os.environ
    workdir = tempfile.TemporaryDirectory(prefix="proxyfix-ansible-")
    home = Path(workdir.name)
    (home / ".ssh").mkdir()
    # host key checking stays on: the plugin reads ~/.ssh/known_hosts
    shutil.copy(env["PFX_KNOWN_HOSTS"], home / ".ssh" / "known_hosts")
    (home / "ansible.cfg").write_text("")
    ansible_env = {
        **{k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"},
        "HOME": str(home),
        "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
        "ANSIBLE_PARAMIKO_PROXY_COMMAND": env["PFX_GATEWAY"],
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCAL_TEMP": str(home / "local-tmp"),
        "ANSIBLE_REMOTE_TMP": str(home / "remote-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    launcher = {
        "run": ["-m", "paramiko_proxyfix", "run", "--", "ansible"],
        "wrapper": [str(Path(__file__).with_name("ansible_with_fix.py"))],
    }[env["PFX_ANSIBLE_VIA"]]

    def ansible(command: str) -> subprocess.Popen[str]:
        argv = [sys.executable, *launcher, "all", "-i", "127.0.0.1,"]
        argv += ["-c", "paramiko", "-f", "1", "-u", env["PFX_USER"]]
        argv += [
            "--private-key",
            env["PFX_KEY"],
            "-e",
            f"ansible_port={env['PFX_PORT']}",
        ]
        argv += ["-m", "command", "-a", command]
        return subprocess.Popen(
            argv,
            env=ansible_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def finish(proc: subprocess.Popen[str], cap: float) -> tuple[int | None, str]:
        try:
            out, _ = proc.communicate(timeout=cap)
        except subprocess.TimeoutExpired:
            capped.kill_pids([proc.pid, *capped.descendants(proc.pid)])
            out, _ = proc.communicate()
            return None, out
        return proc.returncode, out

    t0 = time.monotonic()
    first_rc, first_out = finish(ansible("echo hi-from-ansible"), 60)
    first_took = time.monotonic() - t0

    def remote_sleeps() -> list[int]:
        # the sleep sshd runs for the task, not ansible's own command line
        pids = capped.proxy_processes(SLEEP)
        return [p for p in pids if capped.cmdline(p) == SLEEP]

    proc = ansible(SLEEP)
    try:
        started = support.seconds_until(lambda: bool(remote_sleeps()), 60)
        proxies = [
            p
            for p in capped.descendants(proc.pid)
            if support.proxy_marker() in capped.cmdline(p)
        ]
        assert started is not None and len(proxies) == 1, (started, proxies)
        worker = capped.parent_pid(proxies[0])  # the fork that runs the task
        assert worker is not None
        support.kill_when_idle(proxies[0])
        # CPU the worker burns in the window after the kill (none once it exits)
        t_kill = time.monotonic()
        cpu0 = cpu1 = capped.cpu_seconds(worker)
        worker_took = None
        while time.monotonic() - t_kill < support.CPU_WINDOW:
            try:
                cpu1 = capped.cpu_seconds(worker)
            except ProcessLookupError:
                worker_took = time.monotonic() - t_kill
                break
            time.sleep(0.01)
        worker_cpu = (cpu1 - cpu0) / support.CPU_WINDOW
        rc, out = finish(proc, 20)
        exit_took = time.monotonic() - t_kill
        left = len(capped.proxy_processes(support.proxy_marker()))
    finally:
        capped.kill_pids([proc.pid, *capped.descendants(proc.pid), *remote_sleeps()])
        capped.kill_pids(capped.proxy_processes(support.proxy_marker()))
        proc.wait()
        workdir.cleanup()
    import paramiko_proxyfix  # noqa: F401  -- for emit()'s "installed"

    support.emit(
        first_rc=first_rc,
        first_out=first_out[-2000:],
        first_took=first_took,
        worker_cpu=worker_cpu,
        worker_took=worker_took,
        rc=rc,
        out=out[-2000:],
        exit_took=exit_took,
        proxies_left=left,
    )


@pytest.fixture(scope="module")
def sftp_sshd() -> Iterator[Sshd]:
    """The real sshd with SFTP, which the plugin needs to put a module."""
    with Sshd(options={"Subsystem": "sftp internal-sftp"}) as server:
        yield server


def report(sshd: Sshd, via: str, fixed: bool = True) -> dict[str, Any]:
    """The scenario's figures, ansible started ``via`` run or wrapper."""
    env = {**ssh_env(sshd, fixed), "PFX_ANSIBLE_VIA": via}
    result = capped.run_capped("tests.clients.test_ansible:scenario", 120, env)
    lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines, (result.timed_out, result.stderr[-3000:])
    data: dict[str, Any] = json.loads(lines[-1])
    assert data["installed"] is fixed
    return data


@pytest.mark.parametrize("via", ["run", "wrapper"])
def test_task_fails_at_once_when_the_proxy_dies(sftp_sshd: Sshd, via: str) -> None:
    data = report(sftp_sshd, via)
    print(
        f"ansible via {via}, fixed:", {k: v for k, v in data.items() if "out" not in k}
    )
    print(data["out"])
    assert data["first_rc"] == 0 and "hi-from-ansible" in data["first_out"], data
    # the task ends with the connection, not with the 61 s sleep
    assert data["rc"] not in (None, 0), data
    assert data["exit_took"] < 15, data
    # the next command of the task (removing its temporary directory) finds
    # the transport gone: ansible's verdict for a lost connection
    assert "127.0.0.1 | UNREACHABLE!" in data["out"], data
    # The worker's own failure handling costs ~0.02 s of CPU before it exits;
    # upstream's spin takes a core (0.2 of one on a machine loaded 4x).
    assert data["worker_cpu"] < 0.1, data
    # it ends at once, not at the plugin's next 5 s keepalive as upstream does
    assert data["worker_took"] is not None, data
    assert data["proxies_left"] == 0, data
