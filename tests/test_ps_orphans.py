"""``ps --kill-orphans`` on real processes: pid 1 owners, subreapers, pid reuse.

An orphan is a proxy whose owner is gone. Its parent's pid says nothing about
that: a service running as pid 1 (a container, ``unshare --pid``) owns live
proxies, and a subreaper (systemd user managers, tini) adopts dead owners'
proxies with a pid that is not 1. These tests build both on real processes.
The proxies are Python started under the name ``ssh`` (a symlink), with
``-W host:22`` on their command line, so ps sees them as ``ssh -W``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paramiko_proxyfix.cli import ps
from tests.support import REPO_ROOT, capped

SLEEP = "import time; time.sleep(300)"


@pytest.fixture
def ssh(tmp_path: Path) -> str:
    """A path named ``ssh`` that runs this Python."""
    link = tmp_path / "bin" / "ssh"
    link.parent.mkdir()
    link.symlink_to(os.path.realpath(sys.executable))
    return str(link)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PARAMIKO_PROXYFIX_DISABLE"}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def _wait_parent(pid: int, parent: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while capped.parent_pid(pid) != parent:
        assert time.monotonic() < deadline, f"{pid} was not re-parented to {parent}"
        time.sleep(0.02)


def _ps(*args: str, root: str = "/proc") -> object:
    done = subprocess.run(
        [sys.executable, "-m", "paramiko_proxyfix", "ps", "--json", "--proc", root,
         *args],
        capture_output=True, text=True, env=_env(), stdin=subprocess.DEVNULL,
        timeout=60,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


# -- a pid namespace: the owner is pid 1 ------------------------------------------

# Runs as pid 1 of a new pid namespace. It owns one proxy started through the
# fix, and makes a real orphan: an owner without the fix (so no death signal)
# starts a proxy on plain pipes and is SIGKILLed; the kernel hands the proxy
# to pid 1, which holds none of its pipes.
_PID1 = """
import json, os, subprocess, sys, time
import paramiko_proxyfix, paramiko
ssh, sleep = sys.argv[1], sys.argv[2]
assert os.getpid() == 1, os.getpid()
owned = paramiko.ProxyCommand(f"{ssh} -c '{sleep}' -W owned:22")
owner_code = (
    "import subprocess, sys, time\\n"
    "p = subprocess.Popen([sys.argv[1], '-c', sys.argv[2], '-W', 'orphan:22'],"
    " stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)\\n"
    "print(p.pid, flush=True)\\n"
    "time.sleep(300)\\n"
)
owner = subprocess.Popen([sys.executable, "-c", owner_code, ssh, sleep],
                         stdout=subprocess.PIPE,
                         env=dict(os.environ, PARAMIKO_PROXYFIX_DISABLE="1"))
orphan = int(owner.stdout.readline())
owner.kill()
owner.wait()

def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def ps(*args):
    done = subprocess.run([sys.executable, "-m", "paramiko_proxyfix", "ps",
                           "--json", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    return json.loads(done.stdout) if done.stdout else done.stderr

deadline = time.monotonic() + 10
while ppid(orphan) != 1 and time.monotonic() < deadline:
    time.sleep(0.01)
report = {"owned": owned.process.pid, "orphan": orphan, "listed": ps()}
report["killed"] = ps("--kill-orphans", "--yes")
time.sleep(0.2)
report["owned_alive"] = alive(owned.process.pid)
os.waitpid(orphan, 0)  # pid 1 reaps what it adopted
report["orphan_alive"] = alive(orphan)
owned.close()
print(json.dumps(report), flush=True)
"""


@pytest.mark.timeout(90)
def test_pid1_owner_is_not_an_orphan_but_what_pid1_adopted_is(ssh: str) -> None:
    """In ``unshare --pid --fork --mount-proc``: both proxies have ppid 1.

    The one pid 1 owns (it holds its pipes) is running and survives
    --kill-orphans; the one pid 1 adopted from a SIGKILLed owner is an orphan
    and is killed. The old rule (ppid <= 1) called both orphans.
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a pid namespace")
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
         textwrap.dedent(_PID1), ssh, SLEEP],
        capture_output=True, text=True, env=_env(), stdin=subprocess.DEVNULL,
        timeout=80, start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    print(json.dumps(report, indent=1))
    listed = {p["pid"]: p for p in report["listed"]}
    owned, orphan = listed[report["owned"]], listed[report["orphan"]]
    assert owned["ppid"] == orphan["ppid"] == 1
    assert owned["kind"] == orphan["kind"] == "ssh -W"
    assert owned["state"] == "running", owned
    assert "its parent 1 (python" in owned["owner"]
    assert orphan["state"] == "orphaned", orphan
    assert "re-parented to 1 (python" in orphan["owner"]
    killed = report["killed"]["killed"]
    assert killed == {str(report["orphan"]): "terminated (SIGTERM)"}
    assert report["owned_alive"] is True
    assert report["orphan_alive"] is False


# -- a subreaper: orphans whose new parent is not pid 1 ---------------------------

# Sets PR_SET_CHILD_SUBREAPER (prctl 36) as systemd --user and tini do, starts
# three owners, prints their pids and their proxies' pids, then reaps whatever
# it adopts until its stdin closes, when it kills what is left. The owners'
# stdin is /dev/null: on three pipes held by a Python parent, they would look
# like proxies themselves.
_SUBREAPER = """
import ctypes, json, os, select, signal, subprocess, sys, time
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
ssh, sleep = sys.argv[1], sys.argv[2]
fixed = (
    "import json, sys, time\\n"
    "import paramiko_proxyfix, paramiko\\n"
    "p = paramiko.ProxyCommand(sys.argv[1] + \\" -c '\\" + sys.argv[2]"
    " + \\"' -W fixed:22\\")\\n"
    "print(p.process.pid, flush=True)\\n"
    "time.sleep(300)\\n"
)
plain = (
    "import subprocess, sys, time\\n"
    "p = subprocess.Popen([sys.argv[1], '-c', sys.argv[2], '-W', 'plain:22'],"
    " stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)\\n"
    "print(p.pid, flush=True)\\n"
    "time.sleep(300)\\n"
)
no_fix = dict(os.environ, PARAMIKO_PROXYFIX_DISABLE="1")
owners = {}
for name, code, env in [("fixed", fixed, os.environ), ("kept", plain, no_fix),
                        ("dying", plain, no_fix)]:
    owner = subprocess.Popen([sys.executable, "-c", code, ssh, sleep],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             env=env)
    owners[name] = [owner.pid, int(owner.stdout.readline())]
print(json.dumps({"subreaper": os.getpid(), "owners": owners}), flush=True)
while not select.select([sys.stdin], [], [], 0.05)[0]:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
for owner, proxy in owners.values():
    for pid in (proxy, owner):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


@pytest.fixture
def subreaper(ssh: str) -> Iterator[dict[str, object]]:
    """A live subreaper and its three owners; everything is killed after."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SUBREAPER), ssh, SLEEP],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(),
        start_new_session=True, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    try:
        info = json.loads(child.stdout.readline())
        yield info
    finally:
        child.stdin.close()  # the subreaper kills and reaps what is left
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            capped.kill_pids([child.pid, *capped.descendants(child.pid)])
            child.wait()
        child.stdout.close()


@pytest.mark.timeout(90)
def test_orphans_under_a_subreaper_are_found_and_killed(
    subreaper: dict[str, object], tmp_path: Path
) -> None:
    reaper = subreaper["subreaper"]
    owners = subreaper["owners"]
    assert isinstance(reaper, int) and isinstance(owners, dict)
    (fixed_owner, fixed), (kept_owner, kept), (dying_owner, dying) = (
        owners["fixed"], owners["kept"], owners["dying"]
    )  # fmt: skip
    os.kill(dying_owner, signal.SIGKILL)
    _wait_parent(dying, reaper)  # adopted by the subreaper, not by pid 1
    pids = [reaper, fixed_owner, fixed, kept_owner, kept, dying]
    root = tmp_path / "proc"
    root.mkdir()
    shutil.copy("/proc/uptime", root / "uptime")
    for pid in pids:  # only these: never touch another test's processes
        (root / str(pid)).symlink_to(f"/proc/{pid}")
    listed = _ps(root=str(root))
    assert isinstance(listed, list)
    print(json.dumps(listed, indent=1))
    found = {p["pid"]: p for p in listed}
    assert sorted(found) == sorted([fixed, kept, dying])
    assert found[fixed]["state"] == "running" and found[fixed]["ppid"] == fixed_owner
    assert found[kept]["state"] == "running" and found[kept]["ppid"] == kept_owner
    assert found[dying]["state"] == "orphaned", found[dying]
    assert found[dying]["ppid"] == reaper != 1  # the old rule missed it
    done = _ps("--kill-orphans", "--yes", root=str(root))
    assert isinstance(done, dict)
    assert done["killed"] == {str(dying): "terminated (SIGTERM)"}
    assert capped.wait_gone([dying], timeout=5) == []
    assert capped.proc_state(fixed) not in (None, "Z")
    assert capped.proc_state(kept) not in (None, "Z")


# -- never signal a process that is not the one listed ----------------------------


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SLEEP], stdin=subprocess.DEVNULL, start_new_session=True
    )


def _listed(pid: int, root: str = "/proc") -> ps.Proxy:
    stat = ps.read_stat(root, pid)
    assert stat is not None
    return ps.Proxy(
        pid, stat.ppid, 0.0, "orphaned", "test", "sleep", stat.start_ticks, ""
    )


@pytest.mark.timeout(30)
def test_kill_spares_a_process_whose_start_time_differs() -> None:
    """A pid reused since the listing: the new process is never signalled."""
    child = _sleeper()
    try:
        listed = _listed(child.pid)
        listed.start_ticks -= 1  # as if the listed process had been another one
        assert ps.kill([listed], grace=0.2) == {child.pid: "already gone"}
        time.sleep(0.1)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


@pytest.mark.timeout(30)
def test_kill_refuses_a_proc_tree_of_another_namespace(tmp_path: Path) -> None:
    """A copy of a live process's /proc entry is not provably the same process."""
    child = _sleeper()
    try:
        root = tmp_path / "proc"
        (root / str(child.pid)).mkdir(parents=True)
        shutil.copy(f"/proc/{child.pid}/stat", root / str(child.pid) / "stat")
        outcome = ps.kill([_listed(child.pid, str(root))], str(root), grace=0.2)
        assert outcome == {
            child.pid: f"refused: {root} is not this pid namespace's /proc"
        }
        time.sleep(0.1)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_kill_terminates_the_listed_process(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a pidfd, or, where there is none, after re-reading the start time."""
    if pidfd and ps._pidfd_open is None:
        pytest.skip("no os.pidfd_open on this platform")
    if not pidfd:
        monkeypatch.setattr(ps, "_pidfd_open", None)
    child = _sleeper()
    try:
        outcome = ps.kill([_listed(child.pid)], grace=5)
        assert outcome == {child.pid: "terminated (SIGTERM)"}
        assert child.wait(timeout=5) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()
