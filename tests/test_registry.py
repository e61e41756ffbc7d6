"""The registry of live proxies: snapshot, close_all / close_idle, idle reaper, atexit.

Issue 3, points 1 (registry), 4 (exit) and the idle timeout of point 5.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator

import pytest
from paramiko.packet import Packetizer
from paramiko.proxy import ProxyCommand

import paramiko_proxyfix
from paramiko_proxyfix import readloop, registry, spawn
from paramiko_proxyfix.child import ENDED, RUNNING
from paramiko_proxyfix.extras import extras_of
from tests.support import STUBBORN, capped, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def made() -> Iterator[list[ProxyCommand]]:
    # Start from an empty registry: earlier tests' proxies may await the GC.
    gc.collect()
    paramiko_proxyfix.close_all()
    proxies: list[ProxyCommand] = []
    yield proxies
    for p in proxies:
        p.close()


def start(made: list[ProxyCommand], command: str = "cat") -> ProxyCommand:
    p = ProxyCommand(command)
    made.append(p)
    return p


def ready(p: ProxyCommand) -> ProxyCommand:
    p.settimeout(10)
    assert p.recv(5) == b"ready"
    return p


def reaped(pid: int) -> bool:
    return capped.proc_state(pid) is None


def test_snapshot_describes_each_live_proxy(made: list) -> None:
    p = start(made)
    p.settimeout(5)
    before = time.time()
    assert p.send(b"hello") == 5
    assert p.recv(5) == b"hello"
    [snap] = [s for s in paramiko_proxyfix.proxies() if s["pid"] == p.process.pid]
    assert snap["command"] == "cat"
    assert snap["state"] == "running"
    assert snap["bytes_in"] == 5 and snap["bytes_out"] == 5
    assert snap["started"] <= before <= snap["last_io"] <= time.time()
    assert 0 <= snap["idle_seconds"] < 5
    p.close()
    assert p.process.pid not in [s["pid"] for s in paramiko_proxyfix.proxies()]


def test_registry_holds_no_strong_reference() -> None:
    p = ProxyCommand("cat")
    pid = p.process.pid
    assert pid in [s["pid"] for s in paramiko_proxyfix.proxies()]
    del p
    t0 = time.monotonic()
    gc.collect()
    # The finalizer only starts the close: the waiting happens on the spawner
    # thread, never in the thread the garbage collector ran in.
    collect = time.monotonic() - t0

    # Dropping the last reference closed (and reaped) it, and unlisted it.
    def listed() -> bool:
        return pid in [s["pid"] for s in paramiko_proxyfix.proxies()]

    deadline = time.monotonic() + 10
    while (listed() or not reaped(pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reaped(pid)
    assert not listed()
    print(f"gc.collect() with a proxy to finalize: {collect * 1000:.1f} ms")


def test_a_finalizer_never_blocks_the_collecting_thread() -> None:
    """A proxy that ignores SIGTERM takes a close timeout to end; the thread
    that happens to run the garbage collector must not wait for it."""
    paramiko_proxyfix.configure(close_timeout=4.0)
    try:
        p = ready(ProxyCommand(STUBBORN))
        pid = p.process.pid
        del p
        t0 = time.monotonic()
        gc.collect()
        collect = time.monotonic() - t0
        # 4 s if the collector's thread waited; 10x below that otherwise.
        assert collect < 0.4, collect
        deadline = time.monotonic() + 20
        while not reaped(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reaped(pid)
    finally:
        paramiko_proxyfix.configure(close_timeout=1.0)


def test_close_all_signals_every_proxy_before_waiting(made: list) -> None:
    """Four proxies that ignore SIGTERM cost one close timeout, not four."""
    stubborn = [ready(start(made, STUBBORN)) for _ in range(4)]
    polite = start(made)
    t0 = time.monotonic()
    closed = paramiko_proxyfix.close_all(timeout=0.4)
    took = time.monotonic() - t0
    print(f"close_all of 5 proxies (4 ignore SIGTERM), timeout 0.4 s: {took:.3f} s")
    assert closed == 5
    assert all(p.closed and reaped(p.process.pid) for p in [*stubborn, polite])
    assert all(p.process.stdout.closed for p in [*stubborn, polite])
    assert paramiko_proxyfix.proxies() == []
    # one by one would be 4 x 0.2 s at least
    assert took < 0.4 + max(0.3, 10 * capped.kill_and_reap_now(5)), took
    assert paramiko_proxyfix.close_all() == 0


def test_close_all_fits_a_hard_time_limit_window(made: list) -> None:
    """billiard sends SIGKILL 0.1 s after SIGTERM: close within that."""
    stubborn = [ready(start(made, STUBBORN)) for _ in range(3)]
    t0 = time.monotonic()
    paramiko_proxyfix.close_all(timeout=0.05)
    took = time.monotonic() - t0
    print(f"close_all(timeout=0.05) of 3 proxies ignoring SIGTERM: {took:.3f} s")
    assert all(reaped(p.process.pid) for p in stubborn)
    # 0.1 s on a quiet machine; a loaded one takes longer to kill and reap
    assert took < 0.05 + max(0.05, 10 * capped.kill_and_reap_now(3)), took


def test_close_idle_closes_only_the_idle_ones(made: list) -> None:
    idle, busy = start(made), start(made)
    busy.settimeout(5)
    time.sleep(0.3)
    busy.send(b"x")
    assert busy.recv(1) == b"x"
    assert paramiko_proxyfix.close_idle(0.2) == 1
    assert idle.closed and reaped(idle.process.pid)
    assert not busy.closed
    assert [s["pid"] for s in paramiko_proxyfix.proxies()] == [busy.process.pid]


def _reaper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "idle reaper" in t.name]


def test_idle_timeout_closes_idle_proxies_in_the_background(made: list) -> None:
    registry.set_idle_timeout(1.0)  # the shortest allowed
    try:
        idle, busy = start(made), start(made)
        busy.settimeout(5)
        assert [t.name for t in _reaper_threads()] == ["paramiko_proxyfix idle reaper"]
        deadline = time.monotonic() + 5
        while not idle.closed and time.monotonic() < deadline:
            busy.send(b"x")  # keeps this one in use
            assert busy.recv(1) == b"x"
            time.sleep(0.05)
        assert idle.closed  # from the moment its close() began: reaped soon
        assert wait_until(lambda: reaped(idle.process.pid), 10)
        assert not busy.closed
    finally:
        registry.set_idle_timeout(None)
    deadline = time.monotonic() + 5
    while _reaper_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _reaper_threads()  # ends when the timeout is switched off


def test_idle_timeout_from_the_environment() -> None:
    code = (
        "import json, time\n"
        "import paramiko, paramiko_proxyfix\n"
        "p = paramiko.ProxyCommand('cat')\n"
        "t0 = time.monotonic()\n"
        "while not p.closed and time.monotonic() - t0 < 10: time.sleep(0.01)\n"
        "print(json.dumps({'closed': p.closed, 'after': time.monotonic() - t0}))\n"
    )
    env = {"PARAMIKO_PROXYFIX_IDLE_TIMEOUT": "1"}
    result = capped.run_capped(code, 20, env)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["closed"], (data, result.stderr)
    assert 0.9 < data["after"] < 10, data


EXIT_SCENARIO = f"""
import json, os, sys
import paramiko, paramiko_proxyfix
p = paramiko.ProxyCommand({STUBBORN!r})
p.settimeout(10)
assert p.recv(5) == b"ready"
print(json.dumps({{"pid": p.process.pid}}), flush=True)
sys.exit(0)  # a normal exit, p still referenced: only atexit can close it
"""


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "upstream"])
def test_normal_exit_closes_this_process_proxies(fixed: bool) -> None:
    env = {"PARAMIKO_PROXYFIX_DISABLE": "" if fixed else "1"}
    result = capped.run_capped(EXIT_SCENARIO, 30, env)
    pid = json.loads(result.stdout.strip().splitlines()[-1])["pid"]
    print(f"fixed={fixed}: the child ended after {result.wall_seconds:.2f} s")
    try:
        left = capped.wait_gone([pid], timeout=1.0)
        if fixed:
            assert not left, "atexit left the proxy running"
            # ~1.4 s with two CPU hogs per core (start-up, then close() of a
            # proxy ignoring SIGTERM); 10x that: catches a hang, not load
            assert result.wall_seconds < 15, result
        else:
            assert left == [pid], "upstream should leave this proxy running"
    finally:
        capped.kill_pids([pid])


FORKED_EXIT = f"""
import json, os, sys, time
import paramiko, paramiko_proxyfix
p = paramiko.ProxyCommand({STUBBORN!r})
p.settimeout(10)
assert p.recv(5) == b"ready"
child = os.fork()
if child == 0:
    sys.exit(0)  # atexit runs here, in a process that does not own p
os.waitpid(child, 0)
time.sleep(0.2)
alive = open(f"/proc/{{p.process.pid}}/stat").read().split(")")[1].split()[0]
p.send(b"still mine")  # the pipe is still ours to use
print(json.dumps({{"alive": alive, "closed": p.closed}}), flush=True)
p.close()
"""


def test_exit_of_a_forked_child_never_touches_the_parent_proxies() -> None:
    result = capped.run_capped(FORKED_EXIT, 15)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data == {"alive": "S", "closed": False}, data


# -- the spawner's look at every live proxy (spawn.WATCH_EVERY) -------------


def test_the_spawner_sees_a_proxy_end_that_nobody_reads(made: list) -> None:
    # The read-loop hook only reads a state while the spawner looks: without
    # that look, an idle connection would never learn its proxy failed.
    p = start(made, "sh -c 'exit 5'")
    extras = extras_of(p)
    assert extras is not None and spawn.watching
    deadline = time.monotonic() + 10  # once a second; ten times that: load
    while extras.child.state is RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert extras.child.state == ENDED and extras.child.returncode == 5
    assert capped.proc_state(p.process.pid) == "Z"  # seen, not reaped: close() does


def test_a_failed_look_leaves_the_spawner_running(
    made: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[float] = []

    def broken() -> None:
        looks.append(time.monotonic())
        raise RuntimeError("a look failed")

    monkeypatch.setattr(registry, "look_all", broken)
    ready(start(made, "sh -c 'echo ready; exec cat'"))
    deadline = time.monotonic() + 15
    while len(looks) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(looks) >= 2, "the spawner stopped looking"
    assert spawn.watching
    ready(start(made, "sh -c 'echo ready; exec cat'"))  # and still starts proxies


def test_without_a_spawner_the_hook_looks_every_tenth_idle_tick(
    made: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Green threads (gevent, eventlet) have no spawner looking at proxies:
    # the read loop's hook looks at its own proxy every CHECK_EVERY ticks.
    p = start(made, "sh -c 'exit 5'")
    assert p.process.wait(10) == 5
    monkeypatch.setattr(spawn, "watching", False)
    packetizer = Packetizer(p)
    for _ in range(readloop.CHECK_EVERY - 1):
        packetizer._check_keepalive()  # a tick that does not look
    with pytest.raises(paramiko_proxyfix.ProxyCommandExited) as ended:
        packetizer._check_keepalive()
    assert ended.value.returncode == 5


def test_the_read_loop_looks_only_once_the_spawner_saw_its_proxy_end(
    made: list,
) -> None:
    # An idle tick costs what upstream's does: the look goes on a Packetizer
    # of a proxy the spawner watches only once it has seen the proxy end.
    p = start(made, "sh -c 'echo ready; exec cat'")
    ready(p)
    packetizer = Packetizer(p)
    assert "_check_keepalive" not in vars(packetizer)
    packetizer._check_keepalive()  # upstream's: nothing to look at
    extras = extras_of(p)
    assert extras is not None and extras.arm is not None
    p._signal(9)  # ended by a signal: a failure recv() would report too
    assert wait_until(lambda: extras.child.state is not RUNNING, 10)
    registry.look_all()
    assert "_check_keepalive" in vars(packetizer) and extras.arm is None
    with pytest.raises(paramiko_proxyfix.ProxyCommandExited) as ended:
        packetizer._check_keepalive()
    assert ended.value.returncode == -9


def test_a_packetizer_of_a_plain_socket_gets_no_look() -> None:
    import socket

    a, b = socket.socketpair()
    with a, b:
        assert "_check_keepalive" not in vars(Packetizer(a))


def test_the_look_keeps_no_dropped_connection_alive(made: list) -> None:
    import weakref

    p = start(made)
    packetizer = Packetizer(p)
    extras = extras_of(p)
    assert extras is not None and extras.arm is not None
    extras.arm()  # as the spawner does for a proxy it saw end
    assert "_check_keepalive" in vars(packetizer)
    gone = weakref.ref(packetizer)
    gc.disable()
    try:
        del packetizer
        assert gone() is None  # freed at once: no reference cycle
        extras.arm()  # and arming after that is harmless
    finally:
        gc.enable()


FORKED_SPAWNER = """
import json, os, sys
import paramiko, paramiko_proxyfix
from paramiko_proxyfix import spawn
p = paramiko.ProxyCommand("cat")
seen = [spawn.watching]
child = os.fork()
if child == 0:
    # No spawner thread here: the hook must not trust a look nobody makes.
    os.write(1, json.dumps({"child": spawn.watching}).encode() + b"\\n")
    os._exit(0)
os.waitpid(child, 0)
print(json.dumps({"parent": seen[0]}), flush=True)
p.close()
"""


def test_a_forked_child_does_not_count_on_the_parent_spawner() -> None:
    result = capped.run_capped(FORKED_SPAWNER, 15)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert {"child": False} in lines and {"parent": True} in lines, lines
