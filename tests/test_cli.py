"""The command line, run as a user runs it: ``python -m paramiko_proxyfix ...``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from paramiko_proxyfix.cli import demo, ps
from tests.support import REPO_ROOT, capped


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 60,
    code: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child (its own session, no stdin), with a hard timeout."""
    child_env = dict(os.environ)
    child_env.pop("PARAMIKO_PROXYFIX_DISABLE", None)
    child_env.update(env or {})
    path = child_env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    argv = [sys.executable, "-m", "paramiko_proxyfix", *args]
    if code is not None:
        argv = [sys.executable, "-c", code, *args]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=child_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        start_new_session=True,
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


# -- bad input -------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "usage:"),
        (["run"], "run needs a program"),
        (["run", "-m"], "-m needs a module name"),
        (["run", "--"], "-- needs a program name"),
        (["run", "--bogus"], "unknown option '--bogus'"),
        (["run", "-m", "no_such_module_here"], "no module named 'no_such_module_here'"),
        (["run", "no_such_script.py"], "no such script: no_such_script.py"),
        (
            ["run", "--", "no-such-program-here"],
            "no such program: no-such-program-here",
        ),
        (["run", "--", "ls"], "is not a Python program"),
        (["ps", "--proc", "/nonexistent"], "not a readable proc filesystem"),
    ],
)
def test_bad_input_is_a_message_and_non_zero(args: list[str], words: str) -> None:
    done = cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert words in done.stderr
    no_traceback(done)


# -- demo ---------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_demo_shows_the_incident_without_and_with_the_fix() -> None:
    # The demo reports the unfixed child's CPU share over one second; a spin
    # gets less than a core on a busy machine, so a busy loop runs meanwhile
    # to say what a spin could get (over the whole demo, which is as close to
    # that second as a test outside the demo can get).
    with capped.BusyLoop() as ref:
        r0, start = ref.cpu_seconds(), time.monotonic()
        done = cli("demo", "--json", timeout=130)  # 12.5 s under load: 10x
        wall = time.monotonic() - start
        reference = (ref.cpu_seconds() - r0) / wall
    print(f"demo took {wall:.1f} s; a busy loop got {reference:.2f} of a core")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    without, fixed = report["without_fix"], report["with_fix"]
    print(json.dumps({"without": without, "with": fixed}, indent=1))
    # Without the fix: it spins, never notices, blocks the caller, leaks.
    assert without["fix_installed"] is False
    assert without["killed"]["detect_seconds"] is None
    assert without["killed"]["waiter_seconds"] is None
    assert without["killed"]["cpu_after_kill"] > 0.3 * reference
    assert without["killed"]["zombie_after_close"] is True
    assert without["killed"]["pipes_open_after_close"] == 3
    # Upstream waits for the banner timeout, then says "Error reading SSH
    # protocol banner" or "No existing session": never the proxy's words.
    assert without["failing"]["error"].startswith("SSHException: ")
    assert "refused" not in without["failing"]["error"]
    assert without["failing"]["seconds"] > 1.0
    # With it: ends at once with the proxy's words, reaps, no spin.
    k = fixed["killed"]
    assert fixed["fix_installed"] is True
    assert k["detect_seconds"] is not None
    assert k["waiter_seconds"] is not None
    assert "ProxyCommandExited" in k["error"] and "SIGKILL" in k["error"]
    assert k["cpu_after_kill"] < 0.05  # at rest (load does not raise it)
    assert k["zombie_after_close"] is False
    assert k["pipes_open_after_close"] == 0
    assert "status 255" in fixed["failing"]["error"]
    assert "Connection refused" in fixed["failing"]["error"]
    assert report["ok"] is True
    # The bound for the whole demo, mostly fixed waits (detection
    # window, CPU window, banner timeout): 10.8 s with two CPU hogs per core.
    assert wall < 30
    # The same report as a table for people.
    table = demo.render(report)
    print(table)
    assert "without the fix" in table and "with the fix" in table
    assert "never (waited 3 s)" in table
    assert "The fix works here" in table


def test_demo_table_says_when_the_fix_did_not_work() -> None:
    crashed = {"crash": "did not finish within 25 s and was killed"}
    report = {
        "paramiko": "9.9",
        "python": "3.x",
        "without_fix": crashed,
        "with_fix": crashed,
        "ok": False,
        "problems": demo._problems(crashed),
    }
    table = demo.render(report)
    assert "The fix did NOT work here" in table
    assert "did not finish within 25 s" in table


# -- check --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_check_passes_with_the_fix() -> None:
    done = cli("check")
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: the fix is installed and works" in done.stdout
    report = json.loads(cli("check", "--json").stdout)
    assert report["ok"] is True
    assert [s["name"] for s in report["steps"]] == [
        "enabled",
        "supported",
        "installed",
        "proxy death",
        "close",
    ]


@pytest.mark.timeout(60)
def test_check_fails_when_disabled_by_the_environment() -> None:
    done = cli("check", "--json", env={"PARAMIKO_PROXYFIX_DISABLE": "1"})
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert "PARAMIKO_PROXYFIX_DISABLE" in report["reason"]
    no_traceback(done)


@pytest.mark.timeout(60)
def test_check_fails_on_an_unsupported_paramiko() -> None:
    code = textwrap.dedent(
        """
        import sys, warnings
        import paramiko
        paramiko.__version_info__ = (6, 0, 0)
        paramiko.__version__ = "6.0.0"
        warnings.simplefilter("ignore")
        from paramiko_proxyfix.cli.main import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    done = cli("check", code=code)
    print(done.stdout)
    assert done.returncode == 1
    assert "paramiko 6.0.0 is not supported" in done.stdout
    assert "supported: paramiko >= 2.12" in done.stdout
    no_traceback(done)


@pytest.mark.timeout(60)
def test_check_detects_an_unfixed_paramiko() -> None:
    """Both directions: the live steps fail against upstream's ProxyCommand."""
    code = textwrap.dedent(
        """
        import json, os, sys
        import paramiko_proxyfix
        from paramiko_proxyfix.cli import check
        paramiko_proxyfix.uninstall()
        print(json.dumps(check._live_steps()), flush=True)
        os._exit(0)
        """
    )
    result = capped.run_capped(code, timeout=30)
    assert not result.timed_out, result.stderr
    steps = json.loads(result.stdout)
    print(steps)
    assert steps[0]["ok"] is False and "did not end within" in steps[0]["detail"]
    assert steps[1]["ok"] is False and "zombie" in steps[1]["detail"]


# -- ps -----------------------------------------------------------------------------


def _fake_process(
    root: Path,
    pid: int,
    ppid: int,
    argv: list[str],
    state: str = "S",
    fds: dict[int, str] | None = None,
    exe: str | None = None,
    start: int = 100,
    session: int = 1,
) -> None:
    d = root / str(pid)
    (d / "fd").mkdir(parents=True)
    comm = os.path.basename(argv[0]) if argv else "ssh"
    # state ppid pgrp session ... starttime (the 22nd field of stat)
    fields = [state, str(ppid), "0", str(session)] + ["0"] * 15 + [str(start)]
    fields += ["0"] * 10
    (d / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    for n, target in (fds or {}).items():
        os.symlink(target, d / "fd" / str(n))
    if exe:
        os.symlink(exe, d / "exe")


def _pipes(*inodes: int) -> dict[int, str]:
    """Descriptors 0, 1, ... on the pipes with these inodes."""
    return {n: f"pipe:[{inode}]" for n, inode in enumerate(inodes)}


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    """A /proc tree with a Python worker, its proxies, orphans and bystanders."""
    root = tmp_path / "proc"
    root.mkdir()
    ticks = os.sysconf("SC_CLK_TCK")
    (root / "uptime").write_text(f"{1000 + 100 / ticks:.2f} 0.00\n")
    _fake_process(root, 1, 0, ["/sbin/init"], fds={3: "pipe:[31]", 4: "pipe:[32]"})
    worker_fds = {3: "pipe:[11]", 4: "pipe:[12]", 5: "pipe:[13]", 6: "socket:[9]"}
    worker_fds.update({7: "pipe:[17]", 8: "pipe:[18]", 9: "pipe:[19]"})
    worker_fds.update({10: "pipe:[20]", 11: "pipe:[21]", 12: "pipe:[22]"})
    _fake_process(root, 50, 1, ["python3", "-m", "celery"], fds=worker_fds,
                  exe="/usr/bin/python3.11")  # fmt: skip
    _fake_process(root, 100, 50, ["ssh", "-W", "app1:22", "bastion"],
                  fds=_pipes(11, 12, 13))  # fmt: skip
    _fake_process(root, 101, 1, ["/usr/bin/ssh", "-Wapp2:22", "bastion"])
    _fake_process(root, 102, 50, [], state="Z")
    (root / "102" / "comm").write_text("ssh\n")
    _fake_process(root, 103, 1, ["nc", "app3", "22"], fds=_pipes(14, 15, 16))
    _fake_process(root, 104, 50, ["corp-proxy", "app4"], fds=_pipes(17, 18, 19))
    _fake_process(root, 106, 50, ["corp-proxy", "app6"], fds=_pipes(20, 21, 22),
                  session=106)  # fmt: skip
    # Its parent is not in this tree; nobody here holds its pipes.
    _fake_process(root, 105, 4242, ["ssh", "-W", "app5:22", "bastion"],
                  fds=_pipes(23, 24))  # fmt: skip
    # A service running as pid 1 (a container) that holds its proxy's pipes,
    # and a proxy whose owner died, re-parented to a subreaper (not pid 1).
    _fake_process(root, 107, 1, ["ssh", "-W", "app7:22", "bastion"],
                  fds=_pipes(31, 32, 33))  # fmt: skip
    _fake_process(root, 300, 1, ["python3", "reaper.py"], fds={3: "socket:[7]"},
                  exe="/usr/bin/python3.11")  # fmt: skip
    _fake_process(root, 108, 300, ["ssh", "-W", "app8:22", "bastion"],
                  fds=_pipes(41, 42, 43))  # fmt: skip
    # sleep 60 | ssh -W db:22 bastion | cat: the shell holds none of the
    # ssh's pipes, the commands beside it do.
    _fake_process(root, 400, 1, ["bash", "-c", "..."], exe="/bin/bash")
    _fake_process(root, 401, 400, ["sleep", "60"], fds={1: "pipe:[51]"})
    _fake_process(root, 402, 400, ["ssh", "-W", "db:22", "bastion"],
                  fds=_pipes(51, 52))  # fmt: skip
    _fake_process(root, 403, 400, ["cat"], fds={0: "pipe:[52]"})
    # An orphan whose own child holds its pipes: its subtree does not count.
    _fake_process(root, 500, 1, ["ssh", "-W", "app9:22", "bastion"],
                  fds=_pipes(61, 62))  # fmt: skip
    _fake_process(root, 501, 500, ["helper"], fds=_pipes(61, 62))
    # Came into this pid namespace from outside (setns): its parent is 0.
    _fake_process(root, 600, 0, ["ssh", "-W", "app10:22", "bastion"],
                  fds=_pipes(71, 72))  # fmt: skip
    # Its owner's main thread exited while another thread runs: the process
    # shows as a zombie with no descriptors; its thread still holds the pipe.
    _fake_process(root, 700, 1, ["worker"], state="Z")
    (root / "700" / "task" / "701" / "fd").mkdir(parents=True)
    (root / "700" / "task" / "701" / "fd" / "5").symlink_to("pipe:[81]")
    _fake_process(root, 702, 1, ["ssh", "-W", "app11:22", "bastion"],
                  fds=_pipes(81, 82))  # fmt: skip
    # Bystanders: an interactive ssh, a piped child of a non-Python parent.
    _fake_process(root, 200, 1, ["ssh", "web1"], fds={0: "/dev/pts/0"})
    _fake_process(root, 201, 1, ["bash"], fds={3: "pipe:[21]"}, exe="/bin/bash")
    _fake_process(root, 202, 201, ["sort"], fds=_pipes(91, 91, 91))
    return root


def test_ps_finds_proxies_and_their_states(fake_proc: Path) -> None:
    found = {p.pid: p for p in ps.find_proxies(str(fake_proc))}
    proxies = [100, 101, 102, 103, 104, 105, 106, 107, 108, 402, 500, 600, 702]
    assert sorted(found) == proxies
    assert found[100].state == "running" and found[100].kind == "ssh -W"
    assert found[100].owner == "its parent 50 (python3) holds its pipes"
    # No pipes to compare: its parent being init proves nothing.
    assert found[101].state == "unknown"
    assert "stdin and stdout are not pipes" in found[101].owner
    assert found[102].state == "zombie" and found[102].command == "[ssh]"
    assert found[103].state == "orphaned" and found[103].kind == "proxy tool on pipes"
    assert found[104].kind == "piped child of python"
    assert found[104].state == "running"
    assert found[106].kind == "proxyfix child"  # leads its own session
    assert found[105].state == "orphaned"
    assert found[105].owner.endswith("(its parent now: 4242 (gone))")
    assert found[107].state == "running" and found[107].ppid == 1
    assert found[108].state == "orphaned" and found[108].ppid == 300
    assert found[108].owner == (
        "its owner is gone: no process outside it holds its pipes "
        "(its parent now: 300 (python3))"
    )
    assert found[402].state == "running" and found[402].ppid == 400
    assert found[402].owner == "its pipes are held by 401 (sleep), 403 (cat)"
    assert found[500].state == "orphaned"  # 501 is its own child
    assert found[600].state == "unknown"
    assert "from outside this pid namespace" in found[600].owner
    assert found[702].state == "running"
    assert found[702].owner == "its pipes are held by 700 (worker)"
    assert found[100].age_seconds == pytest.approx(1000, abs=0.1)
    assert found[100].ppid == 50
    matched = ps.find_proxies(str(fake_proc), match=[r"^sort$"])
    assert 202 in {p.pid for p in matched}


def test_ps_counts_unreadable_descriptors_as_unknown(fake_proc: Path) -> None:
    """One process whose descriptors cannot be read (another user's, to a
    user who is not root; here a fd that is not a directory) might hold any
    pipe: no orphans then, only unknowns that say so."""
    _fake_process(fake_proc, 800, 1, ["secret-daemon"])
    os.rmdir(fake_proc / "800" / "fd")
    (fake_proc / "800" / "fd").write_text("")
    found = {p.pid: p for p in ps.find_proxies(str(fake_proc))}
    for pid in (103, 105, 108, 500):
        assert found[pid].state == "unknown", found[pid]
        assert found[pid].owner == (
            "no readable process holds its pipes, but the descriptors of 1 other "
            "process could not be read (not permitted: run as root)"
        )
    # What a readable process holds still shows the owner.
    assert found[100].state == found[402].state == "running"


def test_ps_cli_lists_filters_and_prints_json(fake_proc: Path) -> None:
    table = cli("ps", "--proc", str(fake_proc))
    print(table.stdout)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "PID", "PPID", "AGE", "STATE", "KIND", "COMMAND",
    ]  # fmt: skip
    assert "ssh -W app1:22 bastion" in table.stdout
    # Below the table, each proxy's state explained.
    assert "    402  running: its pipes are held by 401 (sleep), 403 (cat)" in (
        table.stdout
    )
    orphans = json.loads(
        cli("ps", "--proc", str(fake_proc), "--orphans", "--json").stdout
    )
    assert sorted(p["pid"] for p in orphans) == [103, 105, 108, 500]
    assert {p["state"] for p in orphans} == {"orphaned"}
    listed = cli("ps", "--proc", str(fake_proc), "--orphans").stdout
    assert "2 proxies of unknown state, left alone:" in listed
    assert "    600  unknown: it came in from outside" in listed


# An owner that renames itself (its comm) and starts a proxy on pipes whose
# command line carries a terminal escape (set the window title) and a newline
# (forge a row of the table).
_EVIL_OWNER = """
import subprocess, sys, time
with open("/proc/self/comm", "w") as f:
    f.write(sys.argv[1])
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
print(p.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_ps_escapes_control_characters_in_the_table_and_keeps_them_in_json(
    tmp_path: Path,
) -> None:
    link = tmp_path / "ssh"
    link.symlink_to(os.path.realpath(sys.executable))
    target = "db:22\x1b]0;owned\x07\nFORGED-ROW"
    comm = "own\x1b[2J\nx"
    argv = [str(link), "-c", "import time; time.sleep(60)", "-W", target, "bastion"]
    owner = subprocess.Popen(
        [sys.executable, "-c", _EVIL_OWNER, comm, *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert owner.stdout is not None
    proxy = int(owner.stdout.readline())
    try:
        deadline = time.monotonic() + 10
        while "FORGED" not in capped.cmdline(proxy):
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.02)
        table = cli("ps")
        listed = json.loads(cli("ps", "--json").stdout)
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
        capped.kill_pids([proxy])
        capped.wait_gone([proxy], timeout=5)
    print(table.stdout)
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    # ps lists every proxy on the host (another test run's too): ours by pid.
    lines = table.stdout.splitlines()
    rows = [line for line in lines if line.startswith(f"{proxy:>7} {owner.pid:>7}")]
    assert len(rows) == 1, rows
    assert not [ln for ln in lines if ln.startswith("FORGED-ROW")]  # none forged
    assert rows[0].endswith("-W db:22\\x1b]0;owned\\x07\\nFORGED-ROW bastion")
    why = f"{proxy:>7}  running: its parent {owner.pid} (own\\x1b[2J\\nx) holds"
    assert why in table.stdout
    (mine,) = [p for p in listed if p["pid"] == proxy]
    assert mine["command"] == " ".join(argv)  # exact
    assert mine["owner"] == f"its parent {owner.pid} ({comm}) holds its pipes"


# -- run ----------------------------------------------------------------------------

_REPORT = """\
import json, os, sys
import paramiko_proxyfix
print(json.dumps({
    "argv": sys.argv, "path0": sys.path[0], "name": __name__,
    "installed": paramiko_proxyfix.is_installed(),
}))
"""


@pytest.mark.timeout(60)
def test_run_script_gets_its_argv_path_and_the_fix(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text(_REPORT)
    done = cli("run", str(script), "a", "--b", cwd=tmp_path.parent)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"argv": [str(script), "a", "--b"], "path0": str(tmp_path),
                    "name": "__main__", "installed": True}  # fmt: skip


@pytest.mark.timeout(60)
def test_run_module(tmp_path: Path) -> None:
    (tmp_path / "worker_mod.py").write_text(_REPORT)
    done = cli(
        "run", "-m", "worker_mod", "-A", "proj", env={"PYTHONPATH": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["argv"] == [str(tmp_path / "worker_mod.py"), "-A", "proj"]
    assert seen["name"] == "__main__" and seen["installed"] is True


def _console_script(tmp_path: Path) -> dict[str, str]:
    """An installed-looking console script ``proxyfix-demo-tool`` (a dist-info)."""
    lib = tmp_path / "lib"
    (lib / "demo_tool-1.0.dist-info").mkdir(parents=True)
    (lib / "demo_tool-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-tool\nVersion: 1.0\n"
    )
    (lib / "demo_tool-1.0.dist-info" / "entry_points.txt").write_text(
        "[console_scripts]\nproxyfix-demo-tool = demo_tool:main\n"
    )
    (lib / "demo_tool.py").write_text(
        "import json, sys\nimport paramiko_proxyfix\n"
        "def main():\n"
        "    print(json.dumps([sys.argv, paramiko_proxyfix.is_installed()]))\n"
        "    return 3\n"
    )
    return {"PYTHONPATH": str(lib)}


@pytest.mark.timeout(60)
def test_run_console_script_returns_its_status(tmp_path: Path) -> None:
    done = cli("run", "--", "proxyfix-demo-tool", "deploy", "-H", "web1",
               env=_console_script(tmp_path))  # fmt: skip
    assert done.returncode == 3, done.stderr
    argv, installed = json.loads(done.stdout)
    assert argv == ["proxyfix-demo-tool", "deploy", "-H", "web1"]
    assert installed is True


@pytest.mark.timeout(60)
def test_run_python_script_found_on_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "deploy-tool"
    tool.write_text("#!/usr/bin/env python3\n" + _REPORT)
    tool.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    done = cli("run", "--", "deploy-tool", "x", env={"PATH": path})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["argv"] == [str(tool), "x"] and seen["path0"] == str(bin_dir)
    assert seen["installed"] is True


# -- run never takes a program from the current directory --------------------------
#
# Operators run `run` as root, from wherever they are: often a directory other
# users can write to (/tmp, a shared deploy directory). A file planted there,
# named like the program, must not run.


def _plant(directory: Path, name: str, marker: Path) -> Path:
    """An executable Python program ``name`` that creates ``marker`` if run."""
    directory.mkdir(parents=True, exist_ok=True)
    planted = directory / name
    code = f"open({str(marker)!r}, 'w').close()\nprint('PLANTED')\n"
    planted.write_text("#!/usr/bin/env python3\n" + code)
    planted.chmod(0o755)
    return planted


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "path_head", ["", ".", "::", "sub"], ids=["PATH", "dot", "empty", "relative"]
)
def test_run_never_runs_a_planted_program_from_the_cwd(
    path_head: str, tmp_path: Path
) -> None:
    """``run -- celery`` (and ``run NAME``) in a directory holding an
    executable ``celery``: never that file, not even when PATH has an entry
    meaning the current directory (``.``, an empty one, a relative one).
    The old code ran ``./NAME`` whenever such a file existed."""
    cwd, marker = tmp_path / "cwd", tmp_path / "RAN"
    names = ["celery", "proxyfix-planted-tool"]  # the second is installed nowhere
    for name in names:
        _plant(cwd, name, marker)
        _plant(cwd / "sub", name, marker)
    env = {"PATH": f"{path_head}:{os.environ['PATH']}"} if path_head else {}
    for args in (["--", "celery", "--version"], ["celery", "--version"],
                 ["--", names[1]], [names[1]]):  # fmt: skip
        done = cli("run", *args, cwd=cwd, env=env, timeout=60)
        print(args, done.returncode, done.stdout, done.stderr)
        no_traceback(done)
        assert "PLANTED" not in done.stdout
        assert not marker.exists(), f"run {args} ran the planted file"
        if names[1] in args:
            assert done.returncode == 2
            assert f"no such program: {names[1]} (not a console script, not on " in (
                done.stderr
            )
            assert f"to run the file here, say ./{names[1]}" in done.stderr


@pytest.mark.timeout(60)
def test_run_runs_a_file_the_user_named_with_a_path(tmp_path: Path) -> None:
    """The other side of the rule: a slash, or ``.py``, names a file."""
    marker = tmp_path / "RAN"
    _plant(tmp_path, "celery", marker)
    for args in (["./celery"], ["--", "./celery"]):
        marker.unlink(missing_ok=True)
        done = cli("run", *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert marker.exists() and "PLANTED" in done.stdout
    _plant(tmp_path, "deploy.py", marker).chmod(0o644)
    marker.unlink()
    assert cli("run", "deploy.py", cwd=tmp_path).returncode == 0
    assert marker.exists()


@pytest.mark.timeout(60)
def test_run_console_script_never_imports_from_the_cwd(tmp_path: Path) -> None:
    """``python -m`` puts the current directory first on sys.path: a planted
    ``demo_tool.py`` (the module the console script imports) or a planted
    ``*.dist-info`` declaring a console script must not be what runs."""
    env = _console_script(tmp_path)
    cwd, marker = tmp_path / "cwd", tmp_path / "RAN"
    cwd.mkdir()
    payload = f"open({str(marker)!r}, 'w').close()\ndef main():\n    return 99\n"
    (cwd / "demo_tool.py").write_text(payload)
    (cwd / "planted_mod.py").write_text(payload)
    info = cwd / "planted-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: planted\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[console_scripts]\nproxyfix-planted-tool = planted_mod:main\n"
    )
    done = cli("run", "--", "proxyfix-demo-tool", "x", env=env, cwd=cwd)
    assert done.returncode == 3, done.stderr  # the installed one
    assert json.loads(done.stdout) == [["proxyfix-demo-tool", "x"], True]
    planted = cli("run", "--", "proxyfix-planted-tool", env=env, cwd=cwd)
    assert planted.returncode == 2, planted.stderr
    assert "no such program: proxyfix-planted-tool" in planted.stderr
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_run_still_runs_the_program_when_disabled(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text(_REPORT)
    done = cli("run", str(script), env={"PARAMIKO_PROXYFIX_DISABLE": "1"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["installed"] is False


@pytest.mark.timeout(60)
def test_run_passes_the_programs_exit_and_errors_through(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text("import sys\nsys.exit(7)\n")
    assert cli("run", str(script)).returncode == 7
    script.write_text("raise RuntimeError('the program failed')\n")
    failed = cli("run", str(script))
    assert failed.returncode == 1
    # The program's own error is shown as Python would show it.
    assert "RuntimeError: the program failed" in failed.stderr


@pytest.mark.timeout(60)
def test_ps_output_into_a_closed_pipe_is_quiet(fake_proc: Path) -> None:
    # A short output sits in stdout's buffer until exit: the hardest case.
    child = subprocess.Popen(
        [sys.executable, "-m", "paramiko_proxyfix", "ps", "--proc", str(fake_proc)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # like `| head` that has read enough
    err = child.stderr.read().decode()
    child.stderr.close()
    code = child.wait(timeout=30)
    no_traceback(subprocess.CompletedProcess([], code, "", err))
    assert code in (0, 141, -signal.SIGPIPE)
