"""Issue 12 item 2: the fleet view through Celery's remote control.

Unit tests of the snapshot files and the proven-process signal, then the
real thing (tests/celery_app/fleet.py, in a capped child): two prefork
workers on one Redis, ``celery inspect proxyfix_proxies`` lists every proxy
of every pool process with its owner, and ``celery control
proxyfix_close_idle`` closes the idle ones and none of the busy ones.

Then the security review's findings, against real workers
(tests/celery_app/guard.py, one capped run shared by the last tests): values
``close_idle`` must refuse, secrets in proxy commands, a run directory made
first by another user, a symlink planted at its path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

pytest.importorskip("celery", reason="Celery is not installed")

from paramiko_proxyfix import fleet, gate, registry
from paramiko_proxyfix.redact import redact
from tests.celery_app.support import ssh_env
from tests.support import capped
from tests.support.sshd import Sshd
from tests.support.userpy import system_user

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime / "paramiko_proxyfix"


def _child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


PUBLISHER = """
import sys, paramiko
import paramiko_proxyfix
from paramiko_proxyfix import fleet, gate, registry
from paramiko_proxyfix.redact import redact
fleet.enable_publishing()
pc = paramiko.ProxyCommand("sleep 60")
print(pc.process.pid, flush=True)
sys.stdin.readline()
"""


def test_a_child_publishes_and_the_parent_reads_and_closes_its_proxy(
    run_dir: Path,
) -> None:
    child = _child(PUBLISHER)
    try:
        assert child.stdout is not None
        proxy = int(child.stdout.readline())
        assert (run_dir.stat().st_mode & 0o777) == 0o700
        report = fleet.report()
        pool = [p for p in report["processes"] if p["role"] == "pool"]
        assert [p["pid"] for p in pool] == [child.pid]
        [entry] = pool[0]["proxies"]
        assert entry["pid"] == proxy and entry["owner_pid"] == child.pid
        assert entry["state"] == "running" and pool[0]["stats"]["started"] == 1
        time.sleep(0.3)
        assert fleet.close_idle(60)["closed"] == 0
        answer = fleet.close_idle(0.2)
        assert answer["pool"] == 1, answer
        # Ended (a zombie until its owner's connection closes and reaps it).
        assert capped.wait_gone([proxy], timeout=5) == []
    finally:
        left = capped.descendants(child.pid)
        child.kill()
        child.wait(10)
        capped.kill_pids(left)


def test_the_counters_and_the_listener_the_fleet_view_relies_on() -> None:
    calls: list[int] = []
    registry.add_listener(lambda: calls.append(len(registry.live())))
    before = registry.stats()
    running = paramiko.ProxyCommand("sleep 60")
    [entry] = [e for e in registry.proxies() if e["pid"] == running.process.pid]
    assert entry["owner_pid"] == os.getpid() and 0 <= entry["age"] < 10
    assert entry["start_ticks"] == (fleet.proc_stat(entry["pid"]) or (0, 0))[1]
    done = paramiko.ProxyCommand("sh -c 'exit 3'")
    assert capped.wait_gone([done.process.pid], timeout=5) == []
    running.close()
    done.close()
    after = registry.stats()
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {
        "started": 2,
        "closed": 1,
        "ended_by_exit": 1,
        "ended_by_signal": 0,
        "killed_after_timeout": 0,
    }
    assert calls[-4:] == [1, 2, 1, 0]


def test_a_stale_file_is_discarded_and_a_forged_one_not_believed(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / f"{dead.pid}.json").write_text("{}")
    # A live child whose file claims another start time: a reused pid.
    child = _child("import sys; sys.stdin.readline()")
    try:
        forged = {"pid": child.pid, "start_ticks": 1, "stats": {}, "proxies": []}
        (run_dir / f"{child.pid}.json").write_text(json.dumps(forged))
        report = fleet.report()
        assert [p["role"] for p in report["processes"]] == ["main"]
        assert not (run_dir / f"{dead.pid}.json").exists()
    finally:
        child.kill()
        child.wait(10)


def test_terminate_refuses_a_process_that_is_not_the_recorded_one() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        ppid, start = fleet.proc_stat(proc.pid) or (0, 0)
        assert fleet.terminate(proc.pid, start + 1, ppid) is not None
        assert fleet.terminate(proc.pid, start, ppid + 1) is not None
        assert proc.poll() is None
        assert fleet.terminate(proc.pid, start, ppid) is None
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(10)


def test_terminate_signals_only_through_the_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = Path(fleet.__file__).read_text()
    for call in ("os.kill", "killpg", "pidfd_send_signal", "pidfd_open"):
        assert call not in source, call
    asked: list[tuple[int, int | None, Any]] = []

    def pin(pid: int, ticks: int | None, parents: Any = None) -> str:
        asked.append((pid, ticks, parents))
        return "refused: by the test"

    monkeypatch.setattr(gate, "pin", pin)
    assert fleet.terminate(4242, 17, 99) == "refused: by the test"
    assert asked == [(4242, 17, {99})]
    # No start time recorded: nothing to prove the process by, so not asked.
    assert fleet.terminate(4242, None, 99) is not None and len(asked) == 1


BAD_SECONDS: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    0,
    -1,
    True,
    None,
    "5",
]


def test_close_idle_refuses_bad_seconds_before_closing_anything(
    run_dir: Path,
) -> None:
    mine = paramiko.ProxyCommand("sleep 60")
    child = _child(PUBLISHER)
    try:
        assert child.stdout is not None
        theirs = int(child.stdout.readline())
        time.sleep(0.3)  # both idle for 0.3 s: any value taken for 0 closes them
        for bad in BAD_SECONDS:
            with pytest.raises((ValueError, TypeError)) as info:
                fleet.close_idle(bad)
            assert "seconds must be" in str(info.value)
        assert mine.process.poll() is None
        assert capped.proc_state(theirs) not in (None, "Z")
        assert fleet.close_idle(0.2) == {
            "closed": 2,
            "main": 1,
            "pool": 1,
            "refused": [],
        }
        assert capped.wait_gone([theirs], timeout=5) == []
    finally:
        mine.close()
        left = capped.descendants(child.pid)
        child.kill()
        child.wait(10)
        capped.kill_pids(left)


@pytest.mark.parametrize(
    ("argv", "secret"),
    [
        (["sshpass", "-p", "hunter2", "ssh", "-W", "h:22", "j"], "hunter2"),
        (["ssh", "-o", "ProxyPassword=hunter2", "j"], "hunter2"),
        (
            ["ssh", "-o", "ProxyCommand=sshpass -p hunter2 ssh -W %h:%p b", "j"],
            "hunter2",
        ),
        (["sh", "-c", "exec /usr/bin/sshpass -phunter2 ssh -W h:22 j"], "hunter2"),
        (["ssh", "-o", "ProxyCommand=tool --password hunter2", "j"], "hunter2"),
    ],
)
def test_the_relayed_command_hides_secrets_nested_in_one_word(
    argv: list[str], secret: str
) -> None:
    shown = fleet.hidden(redact(argv))
    assert secret not in shown and "***" in shown, shown
    assert fleet.hidden(shown) == shown  # hidden stays hidden, nothing else changes
    assert fleet.hidden("ssh -W h:22  jump") == "ssh -W h:22  jump"
    assert fleet.hidden(None) == "?"


def test_stale_temp_files_go_and_only_our_childrens_files_are_read(
    run_dir: Path,
) -> None:
    run_dir.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / f".{dead.pid}.json.tmp").write_text("{")
    (run_dir / "notes.txt").write_text("not ours to judge")
    (run_dir / f"{os.getpid()}.json").write_text("{}")  # alive, not our child
    assert "blind" not in fleet.report()
    assert sorted(os.listdir(run_dir)) == [f"{os.getpid()}.json", "notes.txt"]


def test_two_workers_list_their_pool_proxies_and_close_the_idle_ones(
    sshd: Sshd,
) -> None:
    result = capped.run_capped("tests.celery_app.fleet:main", 130, ssh_env(sshd))
    lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines, (result.timed_out, result.stderr[-4000:])
    data: dict[str, Any] = json.loads(lines[-1])
    print(f"celery fleet: {json.dumps(data, indent=1)}")
    assert "error" not in data, (data, result.stderr[-4000:])

    for node in ("n1", "n2"):
        pool = data["pools"][node]
        assert len(pool) == 2, data["pools"]
        # inspect: both pool processes' proxies, owners proven through /proc
        reply = data["inspect"][node]
        assert reply["proxies"] == 2, reply
        assert data["owners_checked"][node] == pool, data["owners_checked"]
        for proc in reply["processes"]:
            for p in proc["proxies"]:
                assert p["state"] == "running" and p["bytes_in"] > 0, p
                assert p["command"].split()[1] == "-W", p
        # control: the idle one closed, the busy one kept running to its end
        assert data["close_idle"][node]["ok"]["closed"] == 1, data["close_idle"]
        busy = data["busy"][node]
        assert busy.get("last") == ["50"], busy
        after = data["after_close"][node]
        owners = [p["owner_pid"] for q in after["processes"] for p in q["proxies"]]
        assert owners == [busy["pid"]], after
        idle_pid = next(p for p in pool if p != busy["pid"])
        [idle] = [q for q in after["processes"] if q["pid"] == idle_pid]
        # Ended on its own as its owner saw it: ssh exits 255 on SIGTERM.
        ended = idle["stats"]["ended_by_exit"] + idle["stats"]["ended_by_signal"]
        assert ended == 1 and idle["stats"]["closed"] == 0, idle
    assert data["tasks_after_close"] == "8/8", data
    assert data["seconds"] < 100, data


# -- the security review: real workers (tests/celery_app/guard.py) -----------

OTHER_USER = "proxyfix-other"


def _other_uid() -> int | None:
    """A user that is not us (made as a system user if missing); None if we
    cannot give it a directory (not root)."""
    return system_user(OTHER_USER) if os.geteuid() == 0 else None


@pytest.fixture(scope="module")
def guard() -> dict[str, Any]:
    """One capped run of tests/celery_app/guard.py: its figures."""
    other = _other_uid()
    env = {"PFX_OTHER_UID": str(other)} if other is not None else {}
    env["PFX_GUARD_NODES"] = "ok,symlink" + (",foreign" if other is not None else "")
    result = capped.run_capped("tests.celery_app.guard:main", 150, env)
    lines = [x for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines, (result.timed_out, result.stderr[-4000:])
    data: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in data, (data.get("error"), result.stderr[-4000:])
    print(f"guard run: {data['seconds']} s")
    return data


def _reply(run: dict[str, Any], node: str) -> Any:
    assert run["json"] is not None, run
    return run["json"][node]


_FOR_VALUE = {
    "nan": "not nan",
    "inf": "not inf",
    "0": "not 0.0",
    "-1": "not -1.0",
    "abc": "not 'abc'",
    # through broadcast
    "-inf": "not -inf",
    "1e999": "not inf",
    "": "not ''",
    "-0.5": "not -0.5",
}


@pytest.mark.timeout(200)
def test_close_idle_refuses_anything_but_a_finite_number_above_zero(
    guard: dict[str, Any],
) -> None:
    nodes = guard["held"]
    assert all(len(held) == 2 for held in nodes.values()), nodes
    # Each refused value: an error reply from every node, naming the value.
    for value, run in guard["bad_cli"].items():  # the CLI sent it: no traceback
        assert run["json"] is not None, (value, run["stderr"])
    replies = {v: run["json"] for v, run in guard["bad_cli"].items()}
    replies.update(guard["bad_broadcast"])
    assert set(replies) == set(_FOR_VALUE) | {"true", "none", "missing", "list"}
    for value, reply_of in replies.items():
        assert set(reply_of) == set(nodes), (value, reply_of)
        for node, reply in reply_of.items():
            assert list(reply) == ["error"], (value, node, reply)
            if value in _FOR_VALUE:
                assert "finite number > 0" in reply["error"], reply
                assert _FOR_VALUE[value] in reply["error"], (value, reply)
            else:  # not a number at all
                assert "seconds must be a number" in reply["error"], reply
    # The CLI without --json: one readable line per node, no traceback.
    for value, run in guard["bad_cli_text"].items():
        text = run["stdout"] + run["stderr"]
        assert "Traceback" not in text, text
        assert text.count(": ERROR") == len(nodes), text
        assert f"seconds must be a finite number > 0, {_FOR_VALUE[value]}" in text
    # Nothing was closed: every idle proxy lives, and the workers logged no
    # error for an operator's typo.
    assert guard["alive_after_bad"] == {n: 2 for n in nodes}, guard
    ok = _reply(guard["inspect_after_bad"], "ok")
    assert [p["state"] for q in ok["processes"] for p in q["proxies"]] == [
        "running",
        "running",
    ], ok
    for node, logs in guard["logs"].items():
        assert logs["tracebacks"] == 0 and not logs["command_errors"], (node, logs)
    # A valid value still works: both idle pool proxies closed, through the
    # gate, and nothing refused; the blind nodes say why they closed none.
    valid = _reply(guard["valid"], "ok")["ok"]
    assert valid == {"closed": 2, "main": 0, "pool": 2, "refused": []}, valid
    assert guard["ok_left_after_valid"] == [], guard
    for node in set(nodes) - {"ok"}:
        answer = _reply(guard["valid"], node)["ok"]
        assert answer["closed"] == 0 and "blind" in answer, answer
        assert guard["alive_after_valid"][node] == 2, guard


SECRETS = ("hunter2", "hunter3", "hunter4")


@pytest.mark.timeout(200)
def test_fleet_replies_and_snapshots_never_carry_a_secret(
    guard: dict[str, Any],
) -> None:
    texts = {
        "inspect": guard["inspect"]["stdout"],
        "inspect_after_bad": guard["inspect_after_bad"]["stdout"],
        "inspect_after_valid": guard["inspect_after_valid"]["stdout"],
        "close_idle": guard["valid"]["stdout"],
        "snapshots": json.dumps(guard["snapshot_files"]),
    }
    for name, text in texts.items():
        assert text, name
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, (name, leaked, text[:3000])
    # Hidden, not dropped: the reply still shows the command.
    ok = _reply(guard["inspect"], "ok")
    commands = [p["command"] for q in ok["processes"] for p in q["proxies"]]
    assert len(commands) == 2, ok
    for command in commands:
        assert "sshpass -p *** " in command, command
        assert "ProxyPassword=***" in command, command
        assert "ProxyCommand=sshpass -p *** ssh -W %h:%p bastion " in command
    # Two pool processes published; each file's command hidden as well.
    published = [json.loads(t) for t in guard["snapshot_files"].values()]
    assert len(published) == 2, guard["snapshot_files"].keys()
    assert [len(s["proxies"]) for s in published] == [1, 1]


def _refusals(lines: list[str]) -> dict[str, int]:
    """How many refusal lines each process (Celery's processName) logged."""
    by: dict[str, int] = {}
    for line in lines:
        m = re.search(r"\[[^]]*/([^]]+)\]", line)
        name = m[1] if m else line
        by[name] = by.get(name, 0) + 1
    return by


def _check_blind(guard: dict[str, Any], node: str, why: str) -> None:
    reply = _reply(guard["inspect"], node)
    assert why in reply.get("blind", ""), reply
    assert [p["role"] for p in reply["processes"]] == ["main"], reply
    # Warned once per process, though every pool process retried each second
    # for 4 s with a live proxy: the two pool processes, and the main process
    # once asked.
    counts = _refusals(guard["logs"][node]["run_dir_lines"])
    assert sorted(counts) == ["ForkPoolWorker-1", "ForkPoolWorker-2", "MainProcess"]
    assert set(counts.values()) == {1}, guard["logs"][node]


@pytest.mark.timeout(200)
def test_a_run_dir_made_first_by_another_user_is_refused_once_per_process(
    guard: dict[str, Any],
) -> None:
    if "foreign" not in guard["held"]:
        pytest.skip("needs root, to give a directory to another user")
    _check_blind(guard, "foreign", "belongs to uid")
    assert guard["foreign_dir"] == []  # nothing written into it


@pytest.mark.timeout(200)
def test_a_symlink_at_the_run_dir_path_is_refused(guard: dict[str, Any]) -> None:
    _check_blind(guard, "symlink", "is a symbolic link")
    assert guard["symlink_target"] == []  # nothing written through it
