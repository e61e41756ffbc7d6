"""Host safety: pid reuse, signal handlers, sub-interpreters, threads, exit, pipe pages.

Each scenario runs in a capped child process (several as root in a pid
namespace of their own, or as an unprivileged user), so a regression shows
as a failed assertion or a timed-out child, never as a stuck session or a
killed bystander process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support import STUBBORN
from tests.support.capped import CappedResult, proc_state, run_capped, wait_gone
from tests.support.userpy import (
    UserPython,
    UserPythonError,
    system_user,
    user_python,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not ROOT, reason="needs root: pid namespaces, ns_last_pid, setpriv, useradd"
)


def _report(result: CappedResult) -> dict:
    """The JSON line a scenario printed last, with the child's stderr on failure."""
    assert not result.timed_out, f"the scenario hung:\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"exit {result.returncode}, no report:\n{result.stderr}"
    return dict(json.loads(lines[-1]))


def _in_pid_namespace(code: str, *args: str) -> str:
    """Code for run_capped that becomes ``code`` as pid 1 of a new pid namespace.

    exec keeps the pid run_capped waits for; ``--fork`` makes the script the
    namespace's first process, so the pids it forks after are predictable.
    """
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable]
    argv += ["-c", code, *args]
    return f"import os\nos.execvp('unshare', {argv!r})\n"


# -- 1. pid reuse ------------------------------------------------------------

PID_REUSE = textwrap.dedent(
    """
    import json, os, signal, socket, sys, time
    MODE, TTY = sys.argv[1], sys.argv[2] == "tty"
    NOTICE, PATH = sys.argv[3], sys.argv[4]
    if TTY:
        # A terminal: the fix then keeps proxies in our process group (ssh
        # may prompt there), and signals what A started through pidfds.
        import fcntl, termios
        os.setsid()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    if MODE == "gevent":
        from gevent import monkey
        monkey.patch_all()
        import gevent
    import paramiko
    import paramiko_proxyfix
    from paramiko_proxyfix import gate
    if PATH == "killpg":  # as on a kernel before 6.9
        gate.group_through_pidfd = False
    elif PATH.startswith("no_pidfd"):  # as on a kernel before 5.3
        gate._pidfd_open = None

    out = {}
    a = paramiko.ProxyCommand("sleep 60")
    pid = a.process.pid
    out["a_pid"] = pid
    out["a_own_group"] = os.getpgid(pid) == pid
    out["a_pidfd"] = a._proxyfix.child.pidfd is not None
    if MODE == "sig_ign":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    if NOTICE == "noticed":
        # The fix sees the end first (and remembers it), the reaper comes after.
        while not a.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        out["noticed"] = a._proxyfix.child.state
    if MODE == "handler":  # a SIGCHLD handler of the application reaps
        signal.signal(signal.SIGCHLD, lambda *_: os.waitpid(-1, os.WNOHANG))
        os.kill(os.getpid(), signal.SIGCHLD)
    elif MODE == "poll":
        while a.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    elif MODE == "wait":
        out["wait_got"] = os.wait()[0]
    elif MODE == "gevent":
        while a.process.returncode is None and time.monotonic() < deadline:
            gevent.sleep(0.01)  # gevent's child watcher reaps
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    out["a_reaped"] = not os.path.exists(f"/proc/{pid}")

    try:
        out["a_state"] = [s["state"] for s in paramiko_proxyfix.proxies()
                          if s["pid"] == pid]
    except Exception as exc:
        out["a_state"] = repr(exc)
    a.settimeout(5)
    try:
        out["a_recv"] = repr(a.recv(10))
    except Exception as exc:
        out["a_recv"] = type(exc).__name__
        out["a_recv_returncode"] = getattr(exc, "returncode", "missing")

    # The next process forked gets A's pid: another proxy, leading its own
    # group (as A did) or in ours (with a terminal), with a child of its own.
    b = None
    for attempt in range(10):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        b = paramiko.ProxyCommand("sh -c 'sleep 61 & exec cat'")
        if b.process.pid == pid:
            break
        b.close()
        b = None
    out["b_got_a_pid"] = b is not None
    if b is not None and PATH == "no_pidfd_same_tick":
        # Both started within one 10 ms tick: the start times cannot tell.
        from paramiko_proxyfix import procfs
        a._proxyfix.child.start_ticks = procfs.start_ticks(pid)
    out["b_pgid"] = os.getpgid(pid) if b is not None else None
    out["my_pgid"] = os.getpgid(0)
    out["attempts"] = attempt + 1
    if b is not None:
        out["b_own_group"] = os.getpgid(pid) == pid
        try:
            a.close()
            out["a_close"] = "ok"
        except Exception as exc:
            out["a_close"] = repr(exc)
        time.sleep(0.2)
        state = None
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            pass
        out["b_state"] = state
        out["b_child_alive"] = any(
            open(f"/proc/{p}/cmdline").read().replace(chr(0), " ") == "sleep 61 "
            for p in os.listdir("/proc") if p.isdigit()
        )
        b.settimeout(5)
        try:
            b.send(b"ping")
            got = b""
            while len(got) < 4:
                data = b.recv(4 - len(got))
                if not data:
                    break
                got += data
            out["b_echo"] = got.decode()
        except Exception as exc:
            out["b_echo"] = repr(exc)
        b.close()
    print(json.dumps(out), flush=True)
    """
)

#: (how someone else reaps A, terminal, whether the fix noticed the end
#: first, which path signals a group).
PID_REUSE_CASES = (
    [
        (mode, "no_tty", "fresh", "pidfd_group")
        for mode in ("poll", "sig_ign", "wait", "gevent")
    ]
    + [
        ("sig_ign", "tty", "fresh", "pidfd_group"),
        ("wait", "tty", "fresh", "pidfd_group"),
    ]
    + [
        # Issue 16: the fix saw the end (and cached it) before someone else reaped.
        (mode, tty, "noticed", path)
        for mode in ("poll", "wait", "handler")
        for tty in ("no_tty", "tty")
        for path in ("pidfd_group", "killpg", "no_pidfd")
    ]
    + [
        # Without pidfds, A started in the same clock tick as B: only the
        # zombie A no longer is proves B is not A (a CI run under load met it).
        (mode, tty, "noticed", "no_pidfd_same_tick")
        for mode in ("wait", "handler")
        for tty in ("no_tty", "tty")
    ]
)


@needs_root
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("mode", "tty", "notice", "path"), PID_REUSE_CASES)
def test_pid_reuse_close_spares_the_new_owner(
    mode: str, tty: str, notice: str, path: str
) -> None:
    """A proxy reaped by someone else, its pid now another proxy's (with a
    child of its own): closing the first signals nothing, raises nothing, and
    reports no made-up status; whether or not the fix had seen it end, and
    whichever way the group would be signalled."""
    if mode == "gevent":
        pytest.importorskip("gevent")
    code = _in_pid_namespace(PID_REUSE, mode, tty, notice, path)
    result = run_capped(code, timeout=60)
    out = _report(result)
    print(out)
    assert out["a_reaped"], out
    assert out["a_pidfd"] is (not path.startswith("no_pidfd")), out
    if notice == "noticed":
        assert out["noticed"] == "ended", out
    if mode == "wait":
        assert out["wait_got"] == out["a_pid"], out
    assert out["b_got_a_pid"], out
    if tty == "tty":
        # In our group: os.kill(A's pid) would hit B.
        assert not out["a_own_group"], out
        assert out["b_pgid"] == out["my_pgid"], out
    else:
        # Its own session, as the fix does without a terminal: killpg(A's
        # pid) would hit B and its child too.
        assert out["a_own_group"], out
        assert out["b_own_group"], out
    assert out["a_close"] == "ok", out
    assert out["b_state"] in ("S", "R"), out
    assert out["b_child_alive"], out
    assert out["b_echo"] == "ping", out
    # A's status: the one the fix saw, or the one the Popen that reaped it
    # recorded; else unknown, which reads as a clean end (as in CPython).
    known = notice == "noticed" or mode in ("poll", "gevent")
    if known:
        assert out["a_recv"] == "ProxyCommandExited", out
        assert out["a_recv_returncode"] == -9, out
        assert out["a_state"] == ["exited(-9)"], out
    else:
        assert out["a_recv"] == "b''", out
        assert out["a_state"] == ["ended(unknown)"], out


FOREIGN_PROC = textwrap.dedent(
    """
    import fcntl, json, os, subprocess, termios, time
    # A terminal: the proxy stays in our group, and close() would look for
    # what it started in /proc. This /proc is the host's: another namespace.
    os.setsid()
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    import paramiko
    import paramiko_proxyfix
    from paramiko_proxyfix import procfs, spawn
    # No spawner thread (a thread takes a number too) and no `setpriv --help`
    # probe: the proxy gets this namespace's first free number, 2.
    spawn._prctl = None
    out = {"me": os.getpid(), "proc_is_ours": procfs.is_ours()}
    a = paramiko.ProxyCommand("sleep 60")
    out["a_pid"] = a.process.pid
    out["a_own_group"] = os.getpgid(a.process.pid) == a.process.pid
    out["start_ticks"] = a._proxyfix.child.start_ticks
    out["descendants"] = procfs.descendants(a.process.pid)
    # Our next processes get the numbers that, in the host's /proc, belong
    # to the children of the host's process with the proxy's number.
    victims = [subprocess.Popen(["sleep", "61"]) for _ in range(6)]
    out["victims"] = [v.pid for v in victims]
    with open(f"/proc/{a.process.pid}/stat") as f:
        out["host_name_of_a_pid"] = f.read().split(")")[0].split("(")[1]
    a.close()
    time.sleep(0.3)
    out["a_returncode"] = a.process.returncode
    out["victims_alive"] = [v.poll() is None for v in victims]
    for v in victims:
        v.kill()
        v.wait()
    print(json.dumps(out), flush=True)
    """
)


@needs_root
@pytest.mark.timeout(60)
def test_a_proc_of_another_pid_namespace_is_never_believed() -> None:
    """``unshare --pid --fork`` without ``--mount-proc``: /proc shows the host's
    processes. There the host's process with the proxy's number has children
    whose numbers are, here, unrelated processes: close() must signal none of
    them (0.2 did, through its walk of the proxy's descendants), and no start
    time is recorded from that /proc."""
    argv = ["unshare", "--pid", "--fork", sys.executable, "-c", FOREIGN_PROC]
    result = run_capped(f"import os\nos.execvp('unshare', {argv!r})\n", timeout=30)
    out = _report(result)
    print(out)
    assert out["me"] == 1 and out["proc_is_ours"] is False, out
    assert out["a_pid"] == 2 and not out["a_own_group"], out
    # The host's pid 2 is kthreadd, whose children are the host's pids 3, 4...
    assert out["host_name_of_a_pid"] == "kthreadd", out
    assert out["victims"] == list(range(3, 9)), out
    assert out["start_ticks"] is None and out["descendants"] == [], out
    assert out["a_returncode"] == -15, out
    assert all(out["victims_alive"]), out


# -- 2. close from a signal handler -----------------------------------------

HANDLER_CLOSE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import paramiko
    import paramiko_proxyfix

    HOW, OP = sys.argv[1:3]
    out = {}
    p = paramiko.ProxyCommand("sleep 300")
    pid = p.process.pid

    def handler(signum, frame):
        t = time.monotonic()
        try:
            if HOW == "close_all":
                out["closed"] = paramiko_proxyfix.close_all()
            else:
                p.close()
        except Exception as exc:
            out["handler_error"] = repr(exc)
        out["handler_seconds"] = time.monotonic() - t

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    sent = 0
    t0 = time.monotonic()
    try:
        if OP == "send":
            while True:  # no timeout: blocks once the pipe is full
                sent += p.send(b"x" * 65536)
        else:
            out["recv"] = repr(p.recv(10))  # no timeout: sleep writes nothing
    except Exception as exc:
        out["send_error"] = type(exc).__name__
    out["send_seconds"] = time.monotonic() - t0
    out["sent"] = sent
    out["proxy_gone"] = not os.path.exists(f"/proc/{pid}")
    print(json.dumps(out), flush=True)
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("op", ["send", "recv"])
@pytest.mark.parametrize("how", ["close_all", "proxy_close"])
def test_close_from_signal_handler_during_blocked_io(how: str, op: str) -> None:
    """A SIGALRM handler closes while the main thread blocks in send() (or
    recv()): the close returns within its timeout, the send then raises
    ProxyCommandClosed (a recv reads EOF), no deadlock."""
    close_timeout = 2.0
    env = {"PARAMIKO_PROXYFIX_CLOSE_TIMEOUT": str(close_timeout)}
    code = f"import sys\nsys.argv[1:] = [{how!r}, {op!r}]\n" + HANDLER_CLOSE
    result = run_capped(code, timeout=30, env=env)
    out = _report(result)
    print(out)
    assert "handler_error" not in out, out
    # sleep obeys SIGTERM: expected at once; 10x the whole timeout is lenient.
    assert out["handler_seconds"] < 10 * close_timeout, out
    if op == "send":
        assert out["sent"] > 0, out
        assert out["send_error"] == "ProxyCommandClosed", out
    else:
        assert out.get("recv") == "b''", out
    if how == "close_all":
        assert out["closed"] == 1, out
    assert out["proxy_gone"], out


# -- 3. a sub-interpreter ----------------------------------------------------

SUBINTERP_INNER = textwrap.dedent(
    """
    import os, sys, types
    try:
        import bcrypt
    except ImportError as exc:
        # bcrypt 5's PyO3 refuses every sub-interpreter on 3.13 (cryptography
        # does not); paramiko 3.x imports it only for new-format key files.
        if "subinterpreters" not in str(exc):
            raise
        sys.modules["bcrypt"] = types.ModuleType("bcrypt")
        os.write(1, b"bcrypt stubbed\\n")
    import paramiko
    import paramiko_proxyfix
    p = paramiko.ProxyCommand("cat")
    p.settimeout(5)
    p.send(b"ping")
    got = p.recv(4)
    p.close()
    os.write(1, b"inner " + got + b"\\n")
    """
)

SUBINTERP_OUTER = textwrap.dedent(
    f"""
    import json, sys
    import _testcapi
    rc = _testcapi.run_in_subinterp({SUBINTERP_INNER!r})
    # cryptography (PyO3) initialises in one interpreter only: the
    # sub-interpreter's, so paramiko must not be imported here.
    here = "paramiko" in sys.modules
    print(json.dumps({{"rc": rc, "paramiko_here": here}}), flush=True)
    """
)


#: The idle reaper is a thread of ours too: with an idle timeout set.
IDLE_ENVS = [{}, {"PARAMIKO_PROXYFIX_IDLE_TIMEOUT": "30"}]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("env", IDLE_ENVS, ids=["default", "idle_timeout"])
def test_proxy_in_a_sub_interpreter(env: dict[str, str]) -> None:
    """A sub-interpreter (mod_wsgi's case) uses and closes a proxy, then ends
    cleanly: no thread of ours keeps it from ending (that aborts the process)."""
    pytest.importorskip("_testcapi")
    result = run_capped(SUBINTERP_OUTER, timeout=30, env=env)
    assert not result.timed_out, result.stderr
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert "inner ping" in result.stdout, (result.stdout, result.stderr)
    out = _report(result)
    assert out == {"rc": 0, "paramiko_here": False}, (out, result.stderr)


# -- 4. no thread left -------------------------------------------------------

NO_THREADS = textwrap.dedent(
    """
    import json, os, threading, time, warnings
    import paramiko
    import paramiko_proxyfix

    p = paramiko.ProxyCommand("cat")
    p.settimeout(5)
    p.send(b"x")
    p.recv(1)
    during = [t.name for t in threading.enumerate()]
    p.close()
    t0 = time.monotonic()
    while threading.active_count() > 1 and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    out = {
        "threads_during": during,
        "threads_after": [t.name for t in threading.enumerate()],
        "seconds_to_one_thread": time.monotonic() - t0,
    }
    # 3.12+ warns (DeprecationWarning) on fork() in a threaded process; made
    # an error, the warning is only printed as unraisable: record it instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
    out["fork_status"] = os.waitpid(pid, 0)[1]
    out["fork_warnings"] = [str(w.message) for w in caught
                            if issubclass(w.category, DeprecationWarning)]
    print(json.dumps(out), flush=True)
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("env", IDLE_ENVS, ids=["default", "idle_timeout"])
def test_no_thread_left_after_last_close(env: dict[str, str]) -> None:
    """Once the last proxy is closed, our threads end within about a second:
    fork() is then safe and, on 3.12+, draws no DeprecationWarning."""
    result = run_capped(NO_THREADS, timeout=30, env=env)
    out = _report(result)
    print(out)
    assert len(out["threads_during"]) >= 1, out
    assert out["threads_after"] == ["MainThread"], out
    # The spawner retires after 0.2 s idle; 10x that and more.
    assert out["seconds_to_one_thread"] < 3.0, out
    assert out["fork_status"] == 0, out
    assert out["fork_warnings"] == [], out


# -- 5. exit with stubborn proxies -------------------------------------------

STUBBORN_EXIT = textwrap.dedent(
    f"""
    import json, time
    import paramiko
    import paramiko_proxyfix

    proxies = [paramiko.ProxyCommand({STUBBORN!r}) for _ in range(8)]
    for p in proxies:
        p.settimeout(10)
        got = b""
        while b"ready" not in got:
            got += p.recv(5)
    print(json.dumps({{"pids": [p.process.pid for p in proxies],
                       "t_end": time.time()}}), flush=True)
    """
)


@pytest.mark.timeout(60)
def test_exit_closes_stubborn_proxies_at_once() -> None:
    """Exit with 8 proxies that ignore SIGTERM and EOF: one close timeout in
    all (SIGKILL to all at its half), not one each."""
    close_timeout = 2.0
    env = {"PARAMIKO_PROXYFIX_CLOSE_TIMEOUT": str(close_timeout)}
    result = run_capped(STUBBORN_EXIT, timeout=45, env=env, pipe_grace=0.5)
    ended = time.time()
    out = _report(result)
    exit_seconds = ended - out["t_end"]
    print({"exit_seconds": exit_seconds, "pids": out["pids"]})
    assert result.returncode == 0, result.stderr
    assert len(out["pids"]) == 8
    assert exit_seconds < 2 * close_timeout, (exit_seconds, result.stderr)
    assert wait_gone(out["pids"], 5) == [], [proc_state(p) for p in out["pids"]]


# -- 6. pipe pages of an unprivileged user -----------------------------------

USER = "pfxtest"

PIPE_HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, stat, sys
    import paramiko
    import paramiko_proxyfix

    CMD = "sh -c 'head -c 4000000 /dev/zero; sleep 60'"
    proxies = []
    for _ in range(8):
        p = paramiko.ProxyCommand(CMD)
        # Its stdin: it never reads, so fill the pipe until a send times out.
        p.settimeout(0.05)
        try:
            while True:
                p.send(b"x" * 65536)
        except Exception:
            pass
        # Its stdout: head has filled it; one full read finds it full.
        p.settimeout(5)
        p.recv(65536)
        proxies.append(p)
    total = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                total += fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ
        except OSError:
            pass
    print(json.dumps({"pipe_bytes": total, "uid": os.getuid()}), flush=True)
    sys.stdin.readline()  # hold them until told
    """
)

#: A fresh process's first pipes, the way a worker starting a few subprocesses
#: makes them (32 pipes: 2 MiB at the normal size); their sizes.
FRESH_PIPES = textwrap.dedent(
    """
    import fcntl, json, os
    pipes = [os.pipe() for _ in range(32)]
    print(json.dumps([fcntl.fcntl(r, 1032) for r, w in pipes]))  # F_GETPIPE_SZ
    """
)


_SETPRIV = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups"]


def _user_python() -> UserPython:
    """Our Python and packages, as a copy the user may run (pyenv's
    interpreters and tox's envs are closed to other users); fails if none."""
    try:
        found = user_python(tuple(_SETPRIV))
    except UserPythonError as exc:
        pytest.fail(f"no Python {sys.version_info[:2]} that {USER} may run: {exc}")
    print(
        {
            "user_python": found.python,
            "copy_built": found.built,
            "copy_seconds": round(found.seconds, 2),
        }
    )
    return found


def _as_user(python: UserPython, code: str, **kw: object) -> subprocess.Popen:
    """Run ``code`` as the unprivileged user, importing our packages."""
    return subprocess.Popen(
        [*_SETPRIV, python.python, "-c", code], env=python.env, cwd="/", text=True, **kw
    )  # type: ignore[call-overload]


@needs_root
@pytest.mark.timeout(120)
@pytest.mark.skipif(
    not shutil.which("setpriv") or not sys.platform.startswith("linux"),
    reason="needs util-linux setpriv on Linux",
)
def test_busy_proxies_leave_the_user_normal_pipes() -> None:
    """4 processes of one user, 8 busy proxies each with pipes full both ways:
    a fresh process of that user still gets normal 64 KiB pipes (past the
    user's fs/pipe-user-pages-soft, every new pipe of the user gets 8 KiB;
    the kernel refuses growth past it, so grown pipes leave the user just
    under it, and a few more pipes anywhere tip it over)."""
    system_user(USER)
    python = _user_python()
    holders: list[subprocess.Popen] = []
    try:
        for _ in range(4):
            holders.append(
                _as_user(
                    python,
                    PIPE_HOLDER,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            )
        reports = []
        deadline = time.monotonic() + 60
        for h in holders:
            assert h.stdout is not None
            left = deadline - time.monotonic()
            ready = select.select([h.stdout], [], [], max(left, 0))[0]
            line = h.stdout.readline() if ready else ""
            if not line.startswith("{"):
                h.kill()
                try:  # its proxies may hold its stderr open: not forever
                    err = h.communicate(timeout=10)[1]
                except subprocess.TimeoutExpired:
                    err = "(no end of its stderr in 10 s)"
                pytest.fail(f"holder failed: {line!r} {err}")
            reports.append(json.loads(line))
        fresh = _as_user(
            python, FRESH_PIPES, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            fresh_out, fresh_err = fresh.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            fresh.kill()
            fresh.wait(timeout=10)
            pytest.fail("the fresh process hung")
        assert fresh_out.startswith("["), fresh_err
        sizes = json.loads(fresh_out)
        per_process = [r["pipe_bytes"] for r in reports]
        print(
            {
                "pipe_bytes_per_process": per_process,
                "fresh_first": sizes[0],
                "fresh_smallest": min(sizes),
                "fresh_shrunken": sum(s < 65536 for s in sizes),
            }
        )
        assert all(r["uid"] == pwd.getpwnam(USER).pw_uid for r in reports)
        assert sizes == [65536] * 32, (sizes, per_process)
    finally:
        for h in holders:
            if h.poll() is None:
                assert h.stdin is not None
                h.stdin.close()
        for h in holders:
            try:
                h.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(h.pid, 9)
                h.wait(timeout=10)
            for pipe in (h.stdout, h.stderr):
                if pipe is not None:
                    pipe.close()
