"""Fork hygiene: a forked child drops the proxies it inherited, signals nothing.

Issue 3, point 2. Each scenario runs in a capped child process that forks
(os.fork, or multiprocessing's fork start method as billiard and Fabric 1's
parallel mode do), with the fix and, to show the bug, without it.
"""

from __future__ import annotations

import json

import pytest

from tests.celery_app.support import Owner, seconds_until_gone, ssh_env
from tests.support import capped
from tests.support.sshd import Sshd
from tests.test_owner_death import _HOLDERS, SSH_OWNER

pytestmark = pytest.mark.timeout(60)

INHERIT = """
import json, multiprocessing, os, time
import paramiko, paramiko_proxyfix
from tests.support import capped
FIXED = paramiko_proxyfix.is_installed()
p = paramiko.ProxyCommand("cat")
p.settimeout(5)
fds = capped.fd_targets()
pipes = {fds[s.fileno()] for s in (p.process.stdin, p.process.stdout, p.process.stderr)}

def held():
    return len(pipes & set(capped.fd_targets().values()))

def in_child():
    report = {"held": held()}
    if FIXED:  # upstream's recv would block or spin here
        report["listed"] = len(paramiko_proxyfix.proxies())
        for name, call in (("recv", lambda: p.recv(1)), ("send", lambda: p.send(b"x"))):
            try:
                call()
                report[name] = "no error"
            except Exception as exc:
                report[name] = f"{type(exc).__name__}: {exc}"
    p.close()  # whatever the child does, the parent's proxy must live on
    report["closed"] = p.closed
    return report

if os.environ["MODE"] == "os":
    report = capped.fork_report(in_child)
else:
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=lambda: theirs.send(in_child()))
    proc.start()
    report = ours.recv()
    proc.join(10)
time.sleep(0.2)
state = capped.proc_state(p.process.pid)
echo = None
if FIXED:
    p.send(b"still mine")
    echo = p.recv(64).decode()
print(json.dumps({"child": report, "parent_pid": os.getpid(), "state": state,
                  "echo": echo, "installed": FIXED}))
p.close()
"""


def _run(code: str, env: dict[str, str]) -> dict:
    result = capped.run_capped(code, 20, env)
    assert result.returncode == 0 and not result.timed_out, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["os", "multiprocessing"])
def test_forked_child_releases_inherited_proxies(mode: str) -> None:
    data = _run(INHERIT, {"MODE": mode})
    assert data["installed"]
    child = data["child"]
    assert child["held"] == 0, "the child kept the parent's pipes"
    assert child["listed"] == 0, "the child's registry lists the parent's proxy"
    owner = f"belongs to process {data['parent_pid']}"
    # ProxyCommandForeign, 0.2's name, is ProxyCommandClosed now.
    assert child["recv"].startswith("ProxyCommandClosed") and owner in child["recv"]
    assert child["send"].startswith("ProxyCommandClosed") and owner in child["send"]
    assert child["closed"]
    # The child's close() signalled nothing: the parent's proxy works.
    assert data["state"] == "S" and data["echo"] == "still mine", data


@pytest.mark.unpatched
@pytest.mark.parametrize("mode", ["os", "multiprocessing"])
def test_upstream_child_keeps_the_pipes_and_kills_the_parents_proxy(
    mode: str,
) -> None:
    data = _run(INHERIT, {"MODE": mode, "PARAMIKO_PROXYFIX_DISABLE": "1"})
    assert not data["installed"]
    assert data["child"]["held"] == 3
    assert data["state"] in ("Z", "X"), "upstream close() in the child spared it"


IN_RECV = """
import json, os, signal, time
import paramiko_proxyfix
from tests.celery_app.support import ssh_client
from tests.support import capped
client = ssh_client()
sock = client.get_transport().sock
time.sleep(0.3)  # the transport thread now waits inside sock.recv()

def in_child():
    signal.alarm(10)  # a hang must not outlive the test
    report = {}
    t0 = time.monotonic()
    try:
        sock.recv(1)
    except Exception as exc:
        report["recv"] = type(exc).__name__
    try:
        client.exec_command("echo from-the-child", timeout=5)
    except Exception as exc:
        report["exec"] = str(exc)
    report["seconds"] = time.monotonic() - t0
    return report

child = capped.fork_report(in_child)
_, out, _ = client.exec_command("echo from-the-parent", timeout=10)
print(json.dumps({"child": child, "parent": out.read().decode().strip(),
                  "owner": os.getpid()}))
client.close()
"""


def test_child_forked_mid_recv_fails_fast_and_the_parent_goes_on(sshd: Sshd) -> None:
    """The transport thread holds the read lock at fork: the child must not block."""
    data = _run(IN_RECV, ssh_env(sshd))
    child = data["child"]
    assert child["recv"] == "ProxyCommandClosed", child
    assert f"belongs to process {data['owner']}" in child["exec"], child
    assert child["seconds"] < 5, child
    assert data["parent"] == "from-the-parent"


def test_without_the_death_signal_hygiene_alone_ends_ssh_w(sshd: Sshd) -> None:
    """Where prctl() is missing, fork hygiene still lets ``ssh -W`` see EOF.

    The upstream side of this case is in test_owner_death: there the same
    ``ssh -W`` outlives its owner while a forked child holds its pipes.
    """
    code = "from paramiko_proxyfix import spawn\nspawn._prctl = None\n"
    code += SSH_OWNER.replace("HOLDER", _HOLDERS["fork"])
    with Owner(code, ssh_env(sshd)) as owner:
        proxy = owner.report["proxy"]
        took = seconds_until_gone(proxy, owner.kill(), 3.0)
    print(f"ssh -W without the death signal, forked child alive: gone {took} s")
    assert took is not None and took < 1.0, took
