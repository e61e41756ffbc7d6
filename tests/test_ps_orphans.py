"""``ps`` and ``--kill-orphans`` on real processes: who owns a proxy, who may kill.

An orphan is a proxy whose owner is gone: no process outside its own subtree
holds its stdin or stdout pipe. Its parent's pid says nothing about that: a
service running as pid 1 owns live proxies, a subreaper adopts dead owners'
proxies with a pid that is not 1, and every member of a shell pipeline has
a parent (the shell) that holds none of its pipes.

``--kill-orphans --yes`` run against a whole host's /proc would kill every
orphan on it, other test runs' included, so each scenario here runs as pid
1 of a pid namespace of its own (``unshare --pid --fork --mount-proc``):
its /proc is complete and holds only its processes, and when it exits the
kernel kills whatever is left in it. The proxies are Python started under
the name ``ssh`` (a symlink), with ``-W host:22 bastion`` on their command
line, so ps sees them as ``ssh -W``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from paramiko_proxyfix import gate, procfs
from paramiko_proxyfix.cli import ps
from tests.support import REPO_ROOT
from tests.support.userpy import UserPythonError, system_user, user_python

SLEEP = "import time; time.sleep(300)"
USER = "pfxtest"  # the unprivileged user tests/test_host_safety.py uses too
SETPRIV = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups"]

needs_pidns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a pid namespace",
)


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


# What every scenario starts with. It runs as pid 1 of its namespace.
_PRELUDE = r'''
import json, os, signal, subprocess, sys, time
assert os.getpid() == 1, os.getpid()
SSH, SLEEP, PY = sys.argv[1], sys.argv[2], sys.executable

def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None

def alive(pid):
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"

def ppid(pid):
    fields = stat(pid)
    return int(fields[1]) if fields else None

def argv(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        return []

def wait_until(test, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.01)

def ignores_term(pid):
    with open(f"/proc/{pid}/status") as f:
        mask = [l for l in f if l.startswith("SigIgn:")][0].split()[1]
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))

def ps(*args, prefix=(), python=PY, code=None):
    """Run ps; JSON parsed with --json."""
    how = ["-c", code] if code else ["-m", "paramiko_proxyfix"]
    done = subprocess.run([*prefix, python, *how, "ps", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    out = done.stdout
    if "--json" in args:
        out = json.loads(out) if out.strip() else None
    return {"rc": done.returncode, "out": out, "err": done.stderr}

def proxy(target, body=SLEEP):
    return [SSH, "-c", body, "-W", target, "bastion"]

# An owner without the fix: starts a proxy on pipes, says its pid, sleeps.
OWNER = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=-1, stdout=-1)  # pipes\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(300)\n"
)

def orphan(argv, prefix=(), python=PY):
    """A proxy whose owner was SIGKILLed: the kernel hands it to pid 1 (us),
    which holds none of its pipes."""
    owner = subprocess.Popen([*prefix, python, "-c", OWNER, *argv],
                             stdout=subprocess.PIPE)
    pid = int(owner.stdout.readline())
    owner.kill()
    owner.wait()
    owner.stdout.close()
    wait_until(lambda: ppid(pid) == 1, f"{pid} adopted by pid 1")
    return pid

def pipeline():
    """bash -c 'sleep | ssh -W db:22 bastion | cat': the ssh's pid."""
    ssh = " ".join(repr(a) for a in proxy("db:22"))
    shell = subprocess.Popen(["bash", "-c", f"sleep 300 | {ssh} | cat"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    found = []
    def started():
        found[:] = [int(n) for n in os.listdir("/proc") if n.isdigit()
                    and ppid(int(n)) == shell.pid and "-W" in argv(int(n))]
        return found
    wait_until(started, "the pipeline's ssh")
    return shell.pid, found[0]

def report(**values):
    print(json.dumps(values), flush=True)
'''


def _in_pidns(
    body: str, ssh: str, *args: str, env: dict[str, str] | None = None
) -> dict:
    """Run ``body`` after the prelude as pid 1 of a new pid namespace (its
    ``sys.argv[3:]`` are ``args``); the JSON it reported. ``--kill-child``:
    if we give up on it, it dies too."""
    code = _PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        ["unshare", "--pid", "--kill-child", "--mount-proc", sys.executable, "-c",
         code, ssh, SLEEP, *args],
        capture_output=True, text=True, env=env or _env(), stdin=subprocess.DEVNULL,
        timeout=100, start_new_session=True, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    print(json.dumps(report, indent=1))
    return dict(report)


def _by_pid(listed: list[dict]) -> dict[int, dict]:
    return {p["pid"]: p for p in listed}


# -- pipelines are not orphans -------------------------------------------------------


@needs_pidns
@pytest.mark.timeout(120)
def test_a_pipeline_member_is_running_and_kill_orphans_leaves_it_alone(
    ssh: str,
) -> None:
    """``bash -c 'sleep 300 | ssh -W db:22 bastion | cat'``: the shell, its
    parent, holds none of the ssh's pipes, but sleep and cat do. The old rule
    (the parent holds none: orphaned) listed it orphaned and killed it."""
    report = _in_pidns(
        """
        shell, ssh = pipeline()
        listed = ps("--json")
        killed = ps("--kill-orphans", "--yes", "--json")
        time.sleep(0.3)
        report(shell=shell, ssh=ssh, listed=listed, killed=killed, alive=alive(ssh))
        """,
        ssh,
    )
    listed = _by_pid(report["listed"]["out"])
    mine = listed[report["ssh"]]
    assert mine["kind"] == "ssh -W" and mine["ppid"] == report["shell"]
    assert mine["state"] == "running", mine
    assert "its pipes are held by" in mine["owner"]
    assert "(sleep)" in mine["owner"] and "(cat)" in mine["owner"]
    killed = report["killed"]
    assert killed["rc"] == 0, killed
    assert killed["out"]["proxies"] == [] and killed["out"]["killed"] == {}
    assert report["alive"] is True


@needs_pidns
@pytest.mark.timeout(120)
def test_a_real_orphan_is_killed_and_the_pipeline_beside_it_is_not(ssh: str) -> None:
    """An owner started a proxy on pipes and was SIGKILLed; the proxy had
    started a helper that shares its stdin and stdout (its own subtree, which
    does not count). --kill-orphans kills exactly the orphan."""
    report = _in_pidns(
        """
        helper = "import subprocess, time; subprocess.Popen(['sleep', '300']); " + SLEEP
        lost = orphan(proxy("lost:22", helper))
        wait_until(lambda: any(ppid(int(n)) == lost for n in os.listdir("/proc")
                               if n.isdigit()), "the helper")
        shell, piped = pipeline()
        listed = ps("--json")
        table = ps()
        killed = ps("--kill-orphans", "--yes", "--json")
        wait_until(lambda: not alive(lost), "the orphan's end", timeout=5)
        report(lost=lost, piped=piped, listed=listed, table=table, killed=killed,
               lost_alive=alive(lost), piped_alive=alive(piped))
        """,
        ssh,
    )
    listed = _by_pid(report["listed"]["out"])
    lost, piped = listed[report["lost"]], listed[report["piped"]]
    assert lost["state"] == "orphaned" and lost["ppid"] == 1, lost
    assert piped["state"] == "running", piped
    killed = report["killed"]
    assert killed["rc"] == 0, killed
    assert killed["out"]["killed"] == {str(report["lost"]): "terminated (SIGTERM)"}
    assert report["lost_alive"] is False and report["piped_alive"] is True
    assert "no process outside it holds its pipes" in lost["owner"]
    table = report["table"]["out"]
    assert f"{report['lost']:>7}  orphaned: its owner is gone" in table


# -- pid 1 and subreapers --------------------------------------------------------------


@needs_pidns
@pytest.mark.timeout(120)
def test_pid1_owner_is_not_an_orphan_but_what_pid1_adopted_is(ssh: str) -> None:
    """Both proxies have ppid 1. The one pid 1 owns (through the fix: it holds
    its pipes) is running and survives --kill-orphans; the one pid 1 adopted
    from a SIGKILLed owner is an orphan and is killed."""
    report = _in_pidns(
        """
        import paramiko_proxyfix, paramiko
        owned = paramiko.ProxyCommand(f"{SSH} -c '{SLEEP}' -W owned:22")
        lost = orphan(proxy("orphan:22"))
        listed = ps("--json")
        killed = ps("--kill-orphans", "--yes", "--json")
        time.sleep(0.2)
        report(owned=owned.process.pid, orphan=lost, listed=listed["out"],
               killed=killed, owned_alive=alive(owned.process.pid),
               orphan_alive=alive(lost))
        owned.close()
        """,
        ssh,
    )
    listed = _by_pid(report["listed"])
    owned, orphan = listed[report["owned"]], listed[report["orphan"]]
    assert owned["ppid"] == orphan["ppid"] == 1
    assert owned["kind"] == orphan["kind"] == "ssh -W"
    assert owned["state"] == "running", owned
    assert "its parent 1 (python" in owned["owner"]
    assert orphan["state"] == "orphaned", orphan
    assert "(its parent now: 1 (python" in orphan["owner"]
    killed = report["killed"]["out"]["killed"]
    assert killed == {str(report["orphan"]): "terminated (SIGTERM)"}
    assert report["owned_alive"] is True
    assert report["orphan_alive"] is False


# Sets PR_SET_CHILD_SUBREAPER (prctl 36) as systemd --user and tini do, starts
# three owners (one through the fix, two without it), prints their pids and
# their proxies' pids, then reaps whatever it adopts. The owners' stdin is
# /dev/null: on three pipes held by a Python parent, they would look like
# proxies themselves.
_SUBREAPER = """
import ctypes, json, os, subprocess, sys, time
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
owner, fixed_cmd, plain = sys.argv[1], sys.argv[2], sys.argv[3:]
fixed = (
    "import sys, time\\n"
    "import paramiko_proxyfix, paramiko\\n"
    "p = paramiko.ProxyCommand(sys.argv[1])\\n"
    "print(p.process.pid, flush=True)\\n"
    "time.sleep(300)\\n"
)
owners = {}
for name, code, args in [("fixed", fixed, [fixed_cmd]), ("kept", owner, plain),
                         ("dying", owner, plain)]:
    p = subprocess.Popen([sys.executable, "-c", code, *args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    owners[name] = [p.pid, int(p.stdout.readline())]
print(json.dumps(owners), flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.05)
"""


@needs_pidns
@pytest.mark.timeout(120)
def test_orphans_under_a_subreaper_are_found_and_killed(ssh: str) -> None:
    """A subreaper (PR_SET_CHILD_SUBREAPER, as systemd --user and tini) adopts
    a SIGKILLed owner's proxy: its pid is not 1, it holds none of the pipes."""
    report = _in_pidns(
        """
        fixed_cmd = f"{SSH} -c '{SLEEP}' -W fixed:22"
        reaper = subprocess.Popen([PY, "-c", sys.argv[3], OWNER, fixed_cmd,
                                   *proxy("plain:22")],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        owners = json.loads(reaper.stdout.readline())
        dying_owner, dying = owners["dying"]
        os.kill(dying_owner, signal.SIGKILL)
        wait_until(lambda: ppid(dying) == reaper.pid, "adopted by the subreaper")
        listed = ps("--json")
        killed = ps("--kill-orphans", "--yes", "--json")
        wait_until(lambda: not alive(dying), "the orphan's end", timeout=5)
        report(reaper=reaper.pid, owners=owners, listed=listed["out"],
               killed=killed["out"]["killed"],
               alive={name: alive(pid) for name, (_, pid) in owners.items()})
        """,
        ssh,
        textwrap.dedent(_SUBREAPER),
    )
    owners = report["owners"]
    found = _by_pid(report["listed"])
    (fixed_owner, fixed), (kept_owner, kept), (_, dying) = (
        owners["fixed"], owners["kept"], owners["dying"]
    )  # fmt: skip
    assert sorted(found) == sorted([fixed, kept, dying])
    assert found[fixed]["state"] == "running" and found[fixed]["ppid"] == fixed_owner
    assert found[kept]["state"] == "running" and found[kept]["ppid"] == kept_owner
    assert found[dying]["state"] == "orphaned", found[dying]
    assert found[dying]["ppid"] == report["reaper"] != 1
    assert report["killed"] == {str(dying): "terminated (SIGTERM)"}
    assert report["alive"] == {"fixed": True, "kept": True, "dying": False}


@needs_pidns
@pytest.mark.timeout(120)
def test_ps_kill_orphans_asks_then_terms_then_kills(ssh: str) -> None:
    """Without an answer nothing is touched; with --yes, SIGTERM, then
    SIGKILL for the one that ignores it."""
    report = _in_pidns(
        """
        polite = orphan(proxy("polite:22"))
        deaf = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEP
        stubborn = orphan(proxy("stubborn:22", deaf))
        wait_until(lambda: ignores_term(stubborn), "SIGTERM ignored")
        listed = ps("--json")
        asked = ps("--kill-orphans")
        untouched = alive(polite) and alive(stubborn)
        done = ps("--kill-orphans", "--yes", "--json")
        wait_until(lambda: not alive(polite) and not alive(stubborn), "both gone", 5)
        report(polite=polite, stubborn=stubborn, listed=listed["out"], asked=asked,
               untouched=untouched, done=done)
        """,
        ssh,
    )
    polite, stubborn = report["polite"], report["stubborn"]
    states = {p["pid"]: p["state"] for p in report["listed"]}
    assert states == {polite: "orphaned", stubborn: "orphaned"}
    asked = report["asked"]
    assert asked["rc"] == 1
    assert "Terminate 2 orphaned proxies" in asked["err"]
    assert "Nothing was killed" in asked["err"]
    assert report["untouched"] is True
    done = report["done"]
    assert done["rc"] == 0, done
    assert done["out"]["killed"] == {
        str(polite): "terminated (SIGTERM)",
        str(stubborn): "killed (SIGKILL)",
    }


# -- an unprivileged user ------------------------------------------------------------


def _user_python() -> tuple[str, dict[str, str]]:
    """A Python the unprivileged user can run that imports this package (a
    world-readable copy of ours: tests/support/userpy.py), and its env."""
    system_user(USER)
    try:
        found = user_python(tuple(SETPRIV))
    except UserPythonError as exc:
        pytest.fail(f"no Python {sys.version_info[:2]} that {USER} may run: {exc}")
    keep = ("PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONNOUSERSITE")
    return found.python, _env(**{k: found.env[k] for k in keep})


@needs_pidns
@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv(1)")
def test_an_unprivileged_user_sees_unknown_and_kills_nothing(ssh: str) -> None:
    """Root's orphan, and the user's own: the user cannot read root's
    descriptors (pid 1's among them), so neither can be proved orphaned."""
    python, env = _user_python()
    # The user's proxy: a link named ssh to that Python, where the user may go.
    with tempfile.TemporaryDirectory(prefix="pfx-ssh-") as bin_dir:
        os.chmod(bin_dir, 0o755)
        user_ssh = os.path.join(bin_dir, "ssh")
        os.symlink(python, user_ssh)
        report = _unprivileged_scenario(ssh, python, user_ssh, env)
    roots, users = report["roots"], report["users"]
    as_root = _by_pid(report["as_root"])
    assert as_root[roots]["state"] == as_root[users]["state"] == "orphaned"
    listed = _by_pid(report["listed"]["out"])
    root_proxy, user_proxy = listed[roots], listed[users]
    assert root_proxy["state"] == "unknown", root_proxy
    assert root_proxy["owner"].startswith("cannot read its descriptors; the ")
    assert "could not be read (not permitted: run as root)" in root_proxy["owner"]
    assert user_proxy["state"] == "unknown", user_proxy
    assert user_proxy["owner"].startswith("no readable process holds its pipes, but")
    table = report["table"]
    assert table["rc"] == 0, table
    assert "no orphaned proxies found" in table["out"]
    assert "2 proxies of unknown state, left alone:" in table["out"]
    assert f"{roots:>7}  unknown: cannot read its descriptors" in table["out"]
    killed = report["killed"]["out"]
    assert killed["killed"] == {} and killed["proxies"] == []
    assert sorted(p["pid"] for p in killed["unknown"]) == sorted([roots, users])
    assert report["alive"] == [True, True]


def _unprivileged_scenario(
    ssh: str, python: str, user_ssh: str, env: dict[str, str]
) -> dict:
    return _in_pidns(
        f"""
        AS_USER, USER_PY = {SETPRIV!r}, {python!r}
        roots = orphan(proxy("root:22"))
        users = orphan([{user_ssh!r}, "-c", SLEEP, "-W", "user:22", "bastion"],
                       prefix=AS_USER, python=USER_PY)
        as_root = ps("--json")
        listed = ps("--json", prefix=AS_USER, python=USER_PY)
        table = ps("--kill-orphans", "--yes", prefix=AS_USER, python=USER_PY)
        killed = ps("--kill-orphans", "--yes", "--json", prefix=AS_USER,
                    python=USER_PY)
        time.sleep(0.3)
        report(roots=roots, users=users, as_root=as_root["out"], listed=listed,
               table=table, killed=killed, alive=[alive(roots), alive(users)])
        """,
        ssh,
        env=env,
    )


# -- no pidfd, no signal --------------------------------------------------------------

_NO_PIDFD = (
    "import os, sys\n"
    "del os.pidfd_open  # as on a kernel or Python without pidfds\n"
    "from paramiko_proxyfix.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@needs_pidns
@pytest.mark.timeout(120)
def test_without_pidfds_kill_orphans_refuses_and_the_orphan_survives(
    ssh: str,
) -> None:
    """The old code fell back to kill(pid) after re-reading the start time,
    which a pid reused in between defeats; now it refuses and says why."""
    report = _in_pidns(
        f"""
        lost = orphan(proxy("lost:22"))
        refused = ps("--kill-orphans", "--yes", "--json", code={_NO_PIDFD!r})
        table = ps("--kill-orphans", "--yes", code={_NO_PIDFD!r})
        time.sleep(0.3)
        survived = alive(lost)
        killed = ps("--kill-orphans", "--yes", "--json")  # with pidfds it goes
        report(lost=lost, refused=refused, table=table, survived=survived,
               killed=killed["out"]["killed"])
        """,
        ssh,
    )
    lost = str(report["lost"])
    refused = report["refused"]
    assert refused["rc"] == 1
    assert refused["out"]["killed"] == {lost: "refused: no pidfd on this system"}
    assert f"{lost}: refused: no pidfd on this system" in report["table"]["out"]
    assert report["survived"] is True
    assert report["killed"] == {lost: "terminated (SIGTERM)"}


# -- never signal a process that is not the one listed, or not an orphan now ----------


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SLEEP], stdin=subprocess.DEVNULL, start_new_session=True
    )


def _listed(pid: int, root: str = "/proc") -> ps.Proxy:
    """As if ps had listed ``pid`` as an orphan."""
    stat = procfs.stat(pid, root)
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
        refused = "refused: its start time differs (not the process found)"
        assert ps.kill([listed], grace=0.2) == {child.pid: refused}
        time.sleep(0.1)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("tree", ["copy", "symlinks"])
def test_kill_refuses_a_proc_tree_that_is_not_this_namespaces(
    tree: str, tmp_path: Path
) -> None:
    """A copy of a live process's /proc entry is not provably the same
    process; a tree of links to /proc entries shows only some processes, so
    whether anyone else holds a proxy's pipes cannot be read from it."""
    child = _sleeper()
    try:
        root = tmp_path / "proc"
        root.mkdir()
        if tree == "copy":
            (root / str(child.pid)).mkdir()
            shutil.copy(f"/proc/{child.pid}/stat", root / str(child.pid) / "stat")
        else:
            (root / str(child.pid)).symlink_to(f"/proc/{child.pid}")
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
def test_kill_decides_again_and_spares_what_is_not_an_orphan_now() -> None:
    """Pinned, then judged afresh: a process listed as an orphan whose stdin
    and stdout are not pipes is unknown now, and is not signalled."""
    child = _sleeper()
    try:
        (outcome,) = ps.kill([_listed(child.pid)], grace=0.2).values()
        assert outcome.startswith("refused: now unknown (stdin and stdout are not")
        time.sleep(0.1)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


@pytest.mark.timeout(30)
def test_kill_without_pidfds_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pidfd, no signal: no fallback to kill(pid)."""
    monkeypatch.setattr(gate, "_pidfd_open", None)
    child = _sleeper()
    try:
        outcome = ps.kill([_listed(child.pid)], grace=0.2)
        assert outcome == {child.pid: "refused: no pidfd on this system"}
        time.sleep(0.1)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
