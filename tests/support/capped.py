"""Run code in a child interpreter under a hard cap, and read /proc for leaks.

A bug under test can spin or hang forever; running it in a child with a
wall-clock cap turns that into a result (timed out, CPU seconds burnt)
instead of a stuck test session.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import selectors
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support import REPO_ROOT

_CALLABLE_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TICKS = os.sysconf("SC_CLK_TCK")
# Long-lived processes started on purpose (sshd, redis): not leaks.
_SERVICE_PIDS: set[int] = set()
# Every process a test session starts inherits this variable, which lets leak
# checks find our orphans (re-parented to init) without touching processes
# of another test run on the same machine.
TOKEN_VAR = "PROXYFIX_TEST_TOKEN"


@dataclass
class CappedResult:
    """What happened to a capped child."""

    returncode: int  # negative signal number if killed, as in subprocess
    stdout: str
    stderr: str
    timed_out: bool
    cpu_seconds: float  # user + sys of the child and the children it reaped
    wall_seconds: float


def run_capped(
    code: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | None = None,
    pipe_grace: float = 2.0,
) -> CappedResult:
    """Run ``code`` (Python source, or ``"pkg.mod:func"``) with ``sys.executable``.

    The child gets its own session; on timeout the session and every
    descendant found in /proc get SIGKILL.  The repo root is put on
    PYTHONPATH so ``tests.support`` and ``paramiko_proxyfix`` import.
    ``pipe_grace`` bounds how long we keep reading output after the child
    exited (a leaked grandchild may hold the pipes open).
    """
    if _CALLABLE_PATH.match(code):
        mod, func = code.split(":")
        code = f"import {mod}\n{mod}.{func}()\n"
    child_env = dict(os.environ)
    child_env.update(env or {})
    path = child_env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
        cwd=cwd,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    bufs: dict[int, bytearray] = {proc.stdout.fileno(): bytearray()}
    bufs[proc.stderr.fileno()] = bytearray()
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    deadline = start + timeout
    status: tuple[int, resource.struct_rusage] | None = None  # wait4's
    timed_out = False
    try:
        while True:
            now = time.monotonic()
            if status is None:
                pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status = (st, ru)
                    deadline = min(deadline, now) + pipe_grace
            if status is not None and not sel.get_map():
                break
            if now >= deadline:
                if status is not None:
                    break  # exited; stop waiting for held pipes
                timed_out = True
                _kill_tree(proc.pid)
                status = os.wait4(proc.pid, 0)[1:]
                deadline = time.monotonic() + pipe_grace
                continue
            for key, _ in sel.select(min(0.05, max(0.0, deadline - now))):
                fd = int(key.fd)
                chunk = os.read(fd, 65536)
                if chunk:
                    bufs[fd] += chunk
                else:
                    sel.unregister(fd)
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        if status is None:  # an exception escaped: never leave the child
            _kill_tree(proc.pid)
            status = os.wait4(proc.pid, 0)[1:]
    st, usage = status
    returncode = os.waitstatus_to_exitcode(st)
    proc.returncode = returncode  # keep Popen from waiting/warning later
    out, err = (bytes(b).decode(errors="replace") for b in bufs.values())
    return CappedResult(
        returncode=returncode,
        stdout=out,
        stderr=err,
        timed_out=timed_out,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        wall_seconds=time.monotonic() - start,
    )


def _kill_tree(pid: int) -> None:
    tree = descendants(pid)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    kill_pids(tree)


def fork_report(child: Callable[[], Any]) -> Any:
    """Call ``child`` in a forked copy of this process; return what it returned.

    For scripts given to run_capped: the result comes back as JSON through a
    pipe, and the copy ends with os._exit even if ``child`` raises, rather
    than running on through the script's parent code.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, json.dumps(child()).encode())
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


# -- /proc readers -----------------------------------------------------------


def _stat_fields(path: str) -> list[str] | None:
    """Fields of a /proc stat file after the ``(comm)``; None if gone."""
    try:
        with open(path) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def proc_state(pid: int) -> str | None:
    """One-letter state (R, S, Z, ...) of a process, None if it is gone."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return fields[0] if fields else None


def _ppid_map() -> dict[int, int]:
    result = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(f"/proc/{name}/stat")
            if fields:
                result[int(name)] = int(fields[1])
    return result


def child_pids(pid: int | None = None) -> list[int]:
    """Direct children (zombies included) of ``pid`` (default: this process)."""
    parent = os.getpid() if pid is None else pid
    return sorted(p for p, pp in _ppid_map().items() if pp == parent)


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, None if it is gone."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return int(fields[1]) if fields else None


def descendants(pid: int) -> list[int]:
    """Every living-or-zombie descendant of ``pid``, found through /proc."""
    parents = _ppid_map()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        cur = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == cur]
        found.extend(kids)
        frontier.extend(kids)
    return found


def count_zombie_children(pid: int | None = None) -> int:
    """How many children of ``pid`` (default: us) are unreaped zombies."""
    return sum(proc_state(p) == "Z" for p in child_pids(pid))


def fd_targets() -> dict[int, str]:
    """This process's open descriptors and what each is (``pipe:[INODE]``...).

    The descriptor listdir used is not among them: it is closed by then.
    """
    targets = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            targets[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory descriptor listdir used, now closed
            continue
    return targets


def open_fds() -> list[int]:
    """This process's open descriptors (the one used for listing excluded)."""
    return sorted(fd_targets())


def cmdline(pid: int) -> str:
    """A process's argv joined by spaces ('' for zombies and gone processes)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def proxy_processes(pattern: str) -> list[int]:
    """Living (non-zombie) processes whose command line contains ``pattern``."""
    me = os.getpid()
    return sorted(
        int(n)
        for n in os.listdir("/proc")
        if n.isdigit()
        and int(n) != me
        and pattern in cmdline(int(n))
        and proc_state(int(n)) not in (None, "Z")
    )


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """user+sys CPU seconds of a process, or of one of its threads."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = _stat_fields(path)
    if fields is None:
        raise ProcessLookupError(path)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_fraction(pid: int, seconds: float, tid: int | None = None) -> float:
    """Share of one core used by ``pid`` (or thread ``tid``) over ``seconds``.

    For a thread of this process: ``cpu_fraction(os.getpid(), 1, t.native_id)``.
    """
    before, t0 = cpu_seconds(pid, tid), time.monotonic()
    time.sleep(seconds)
    after, t1 = cpu_seconds(pid, tid), time.monotonic()
    return (after - before) / (t1 - t0)


# -- leak control ------------------------------------------------------------


def register_service_pid(pid: int) -> None:
    """Mark ``pid`` and its descendants as intended, not as leaks."""
    _SERVICE_PIDS.add(pid)


def unregister_service_pid(pid: int) -> None:
    """Undo ``register_service_pid``."""
    _SERVICE_PIDS.discard(pid)


def mark_session() -> str:
    """Give this process (and so all it starts) a fresh leak-check token."""
    token = f"{os.getpid()}-{time.time_ns()}"
    os.environ[TOKEN_VAR] = token
    return token


def _has_token(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


def stray_processes() -> list[int]:
    """Living processes started by this test session that are still around.

    That is descendants of this process, plus processes carrying our token
    (orphans), minus registered services and their descendants.
    """
    services = set(_SERVICE_PIDS)
    for pid in list(services):
        services.update(descendants(pid))
    found = set(descendants(os.getpid()))
    token = os.environ.get(TOKEN_VAR)
    if token:
        needle = f"{TOKEN_VAR}={token}".encode()
        pids = (int(n) for n in os.listdir("/proc") if n.isdigit())
        found.update(p for p in pids if _has_token(p, needle))
    found.discard(os.getpid())
    return sorted(p for p in found - services if proc_state(p) not in (None, "Z"))


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each pid, ignoring ones already gone."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until the pids are gone or zombies; return the ones still alive."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for p in pending if proc_state(p) not in (None, "Z")]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.02)
