"""Fabric 1 (the Python 3 port fabric3==1.14.post1, on paramiko 2.12).

Issue 3, point 6: Fabric 1's global ``HostConnectionCache`` reconnects after
its ``ssh -W`` proxy is killed, and ``disconnect_all()`` leaves no zombie and
no open pipe. fabric3 pins paramiko 2.12, so this runs in its own tox env
(``fabric1``); elsewhere it is skipped.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "fabric.api",
    reason="Fabric 1 (fabric3==1.14.post1) is not installed; run `tox -e fabric1`",
)

from tests.celery_app.support import scenario_report
from tests.support.sshd import Sshd

pytestmark = pytest.mark.timeout(300)

PRELUDE = """
import json, os, signal, tempfile, time
import paramiko, paramiko_proxyfix
from fabric.api import env, execute, hide, parallel, run
from fabric.network import disconnect_all
from fabric.state import connections
from tests.support import capped

e = os.environ
config = tempfile.NamedTemporaryFile("w", suffix=".ssh_config", delete=False)
config.write(f"Host {e['PFX_HOST']}\\n    ProxyCommand {e['PFX_GATEWAY']}\\n")
config.close()
env.use_ssh_config = True
env.ssh_config_path = config.name
env.host_string = f"{e['PFX_USER']}@{e['PFX_HOST']}:{e['PFX_PORT']}"
env.key_filename = e["PFX_KEY"]
env.no_agent = env.no_keys = True
env.disable_known_hosts = True
env.system_known_hosts = e["PFX_KNOWN_HOSTS"]
env.reject_unknown_hosts = True
env.abort_on_prompts = True
env.abort_exception = RuntimeError
env.timeout = 10
env.connection_attempts = 1

TOOK = []  # seconds per command, for the report

def do(command):
    t0 = time.monotonic()
    try:
        with hide("everything"):
            # ~0.1 s each (a reconnect ~0.5 s): 30 s is headroom for a busy
            # machine, where 5 s was seen to run out
            return run(command, pty=False, shell=False, timeout=30).strip()
    except BaseException as exc:
        return f"error: {type(exc).__name__}: {exc}"[:200]
    finally:
        TOOK.append(round(time.monotonic() - t0, 3))

def proxy():
    return connections[env.host_string].get_transport().sock

def pipes(sock):
    fds = capped.fd_targets()
    streams = (sock.process.stdin, sock.process.stdout, sock.process.stderr)
    return {fds[s.fileno()] for s in streams}

def open_pipes(names):
    return len(names & set(capped.fd_targets().values()))
"""

RECOVERY = (
    PRELUDE
    + """
first = do("echo first")
old = proxy()
names = pipes(old)
os.kill(old.process.pid, signal.SIGKILL)
time.sleep(0.3)
busy = capped.cpu_share(os.getpid(), 1.0).report()
after = [do(f"echo again-{i}") for i in range(3)]
new = proxy()
names |= pipes(new)
disconnect_all()
time.sleep(0.2)
print(json.dumps({
    "installed": paramiko_proxyfix.is_installed(),
    "paramiko": paramiko.__version__,
    "first": first, "cpu": busy, "after": after, "took": TOOK,
    "reconnected": new is not old,
    "zombies": capped.count_zombie_children(),
    "open_pipes": open_pipes(names),
    "proxies_alive": [p for p in (old.process.pid, new.process.pid)
                      if capped.proc_state(p) not in (None, "Z")],
}), flush=True)
"""
)


def _scenario(sshd: Sshd, code: str, fixed: bool) -> dict:
    data = scenario_report(sshd, code, fixed, cap=140)
    print(f"fabric 1, fixed={fixed}: {data}")
    return data


def test_connection_cache_reconnects_and_disconnect_all_reaps(sshd: Sshd) -> None:
    data = _scenario(sshd, RECOVERY, fixed=True)
    assert data["first"] == "first"
    assert data["after"] == ["again-0", "again-1", "again-2"], data["after"]
    assert data["reconnected"]
    assert data["cpu"]["cpu"] < 0.05, data  # at rest (load does not raise it)
    assert data["zombies"] == 0 and data["open_pipes"] == 0, data
    assert data["proxies_alive"] == []


def test_upstream_connection_cache_fails_and_leaks(sshd: Sshd) -> None:
    data = _scenario(sshd, RECOVERY, fixed=False)
    assert data["first"] == "first"
    assert all(a.startswith("error") for a in data["after"]), data["after"]
    # a full core on an idle machine, less on a busy one: as much as a busy
    # loop got over the same second
    assert data["cpu"]["ratio"] > 0.5, data
    assert data["zombies"] >= 1 and data["open_pipes"] > 0, data


PARALLEL = (
    PRELUDE
    + """
@parallel
def task():
    return do("echo from-a-parallel-child")

first = do("echo first")
before = proxy()
results = execute(task, hosts=[env.host_string])
still = do("echo parent-still-connected")
print(json.dumps({
    "installed": paramiko_proxyfix.is_installed(),
    "child": list(results.values()), "parent": still,
    "same_proxy": proxy() is before,
}), flush=True)
disconnect_all()
"""
)


def test_parallel_mode_leaves_the_parents_connection_alone(sshd: Sshd) -> None:
    """Fabric 1 forks one process per host; the fork must not touch our proxy."""
    data = _scenario(sshd, PARALLEL, fixed=True)
    assert data["child"] == ["from-a-parallel-child"]
    assert data["parent"] == "parent-still-connected"
    assert data["same_proxy"]
