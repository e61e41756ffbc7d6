"""Run code in a child interpreter under a hard cap; read /proc for leaks and CPU.

A bug under test can spin or hang forever; running it in a child with a
wall-clock cap turns that into a result (timed out, CPU seconds burnt)
instead of a stuck test session.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import resource
import select
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


def kill_and_reap_now(n: int) -> float:
    """Seconds to SIGKILL and reap ``n`` children right now: what a close
    costs beyond its timeouts, on this machine at this moment (a reference
    for time bounds that must hold on a loaded machine)."""
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(n)]
    t0 = time.monotonic()
    for child in children:
        child.kill()
    for child in children:
        child.wait(30)
    return time.monotonic() - t0


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


# A process that does nothing but burn CPU. It says when its loop starts, so
# a window never includes its interpreter start-up, and it ends when its
# parent does (checked every few milliseconds): a test killed by its cap must
# not leave a CPU hog behind.
_BUSY_LOOP = """
import os, sys
parent = int(sys.argv[1])
os.write(1, b".")
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


class BusyLoop:
    """A reference busy-loop process: the CPU one hungry process gets right now.

    A spinning process gets a core on an idle machine and a fraction of one on
    a busy machine, so "it spins" is only measurable against something that
    spins for sure over the same window. The loop runs in a session of its
    own: with autogroup scheduling each session gets an equal share, as does
    the capped child (run_capped) a test measures.
    """

    proc: subprocess.Popen[bytes]

    def __enter__(self) -> BusyLoop:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BUSY_LOOP, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.read(1) != b".":  # blocks until the loop starts
            self.__exit__()
            raise RuntimeError("the busy-loop reference process did not start")
        return self

    def cpu_seconds(self) -> float:
        """user+sys CPU seconds the loop has used so far."""
        return cpu_seconds(self.proc.pid)

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class CpuShare:
    """CPU used over a window, next to what a BusyLoop got in the same window."""

    cpu: float  # share of one core used by what was measured
    reference: float  # share of one core the busy loop got meanwhile
    seconds: float  # wall length of the window

    @property
    def ratio(self) -> float:
        """``cpu`` as a fraction of ``reference``: about 1 for a spin, ~0 at rest.

        NaN (every comparison false) if the reference got no CPU at all: then
        the window says nothing either way.
        """
        return self.cpu / self.reference if self.reference > 0 else math.nan

    def report(self) -> dict[str, float]:
        """The figures as JSON-ready numbers, for a scenario's report line."""
        return {
            "cpu": round(self.cpu, 4),
            "reference": round(self.reference, 4),
            "ratio": round(self.ratio, 4),
            "seconds": round(self.seconds, 3),
        }


def cpu_share(read: Callable[[], float] | int, seconds: float) -> CpuShare:
    """CPU seconds from ``read`` (or of a pid) per second, against a BusyLoop.

    Both are measured over the same ``seconds`` of wall time. For a thread:
    ``cpu_share(functools.partial(cpu_seconds, os.getpid(), tid), 1)``.
    """
    if isinstance(read, int):
        read = functools.partial(cpu_seconds, read)
    with BusyLoop() as ref:
        r0, c0, t0 = ref.cpu_seconds(), read(), time.monotonic()
        time.sleep(seconds)
        r1, c1, t1 = ref.cpu_seconds(), read(), time.monotonic()
    wall = t1 - t0
    return CpuShare(cpu=(c1 - c0) / wall, reference=(r1 - r0) / wall, seconds=wall)


def wait_readable(stream: Any, timeout: float) -> bool:
    """Whether ``stream`` (a file object or fd) has data or EOF within ``timeout``.

    Lets a test with a short socket timeout first wait, with headroom, for a
    proxy to start and write: starting a Python proxy alone can take longer
    than 0.1 s on a busy machine.
    """
    poller = select.poll()
    poller.register(stream, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def process_cpu_seconds() -> float:
    """user+sys CPU seconds of this process, all its threads."""
    t = os.times()
    return t.user + t.system


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
