"""Starting proxy processes so that none outlives its owner.

On Linux every proxy gets ``PR_SET_PDEATHSIG(SIGKILL)``: when the process that
owns it dies by any means (a SIGKILL from a hard time limit included), the
kernel kills the proxy, even one that ignores SIGTERM and EOF, and even while
a forked child still holds its pipes.

That signal follows the *thread* that forked the proxy, not the process: a
proxy started from a short-lived thread would die with that thread. So every
proxy is started from one long-lived daemon thread per process, the spawner,
which only ends when the process does. A forked child starts its own spawner
on first use.

The signal is set by util-linux's ``setpriv --pdeathsig``, which then execs
the proxy, where it exists and Python starts children with vfork() (3.10+).
Setting it in a ``preexec_fn`` instead makes subprocess fork(), which costs
16 ms rather than 0.3 ms in a process with 512 MiB resident, as workers are.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from typing import Any, Callable

from .errors import ProxyCommandStartError

__all__ = [
    "descendants",
    "forked_for_exec",
    "has_controlling_tty",
    "owner_death_supported",
    "spawn",
]

_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl(), resolved once: the forked child must not load anything."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()


def owner_death_supported() -> bool:
    """Whether proxies are killed by the kernel when their owner dies."""
    return _prctl is not None


def has_controlling_tty() -> bool:
    """Whether this process has a terminal a proxy could prompt on."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


#: setpriv's path once known to take --pdeathsig; "" when it cannot be used.
_setpriv: str | None = None


def _find_setpriv() -> str:
    """setpriv(1), if it sets a parent-death signal and saves a fork()."""
    global _setpriv
    if _setpriv is None:
        path = shutil.which("setpriv") if sys.version_info >= (3, 10) else None
        found = ""
        if path:
            try:
                usage = subprocess.run(
                    [path, "--help"], capture_output=True, timeout=5
                ).stdout
            except (OSError, subprocess.SubprocessError):
                usage = b""
            if b"--pdeathsig" in usage:
                found = path
        _setpriv = found
    return _setpriv


def _check_runnable(argv0: str) -> None:
    """Fail as exec would, before setpriv stands between us and the exec."""
    if os.sep in argv0:
        path: str | None = argv0
        if not os.path.exists(argv0):
            path = None
        elif os.path.isdir(argv0) or not os.access(argv0, os.X_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    else:
        path = shutil.which(argv0)
    if path is None:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))


def _popen(argv: list[str], own_group: bool, die_with: int | None) -> Any:
    """Popen with three pipes and no shell, as upstream does."""
    preexec = None
    command = argv
    setpriv = _find_setpriv() if die_with is not None else ""
    if setpriv:
        # The owner may die before setpriv sets the signal: the proxy then
        # lives on until it sees EOF on its stdin, as without the signal.
        command = [setpriv, "--pdeathsig", "KILL", "--", *argv]
    elif die_with is not None and _prctl is not None:
        prctl = _prctl

        def preexec() -> None:
            prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
            # The owner may have died between fork() and prctl(): then no
            # signal will ever come, so end now instead of living on alone.
            if os.getppid() != die_with:
                os._exit(255)

    try:
        if setpriv:
            _check_runnable(argv[0])
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=own_group,
            preexec_fn=preexec,
        )
    except OSError as exc:
        reason = f"{exc.strerror or exc}: {argv[0]!r}"
        raise ProxyCommandStartError(" ".join(argv), reason) from exc


class _Job:
    """One Popen to run on the spawner thread; the result goes back to the caller."""

    def __init__(self, argv: list[str], own_group: bool) -> None:
        self.argv = argv
        self.own_group = own_group
        self.done = threading.Event()
        self.process: Any = None
        self.error: BaseException | None = None


class _Spawner:
    """The daemon thread that forks every proxy of this process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name="paramiko_proxyfix spawner", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        global _spawner_ident
        _spawner_ident = threading.get_ident()
        while True:
            job = self._jobs.get()
            try:
                job.process = _popen(job.argv, job.own_group, self.pid)
            except BaseException as exc:  # handed to the caller, never lost here
                job.error = exc
            job.done.set()
            del job  # hold no reference to a finished Popen while idle

    def run(self, argv: list[str], own_group: bool) -> Any:
        job = _Job(argv, own_group)
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.process


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()
#: The spawner thread's id; a forked child keeps the id of the forking thread.
_spawner_ident: int | None = None


def forked_for_exec() -> bool:
    """In an at-fork hook: whether this child is a proxy about to exec.

    Only the spawner forks from its thread, and only to exec: tidying up
    inherited state there would be wasted work.
    """
    return _spawner_ident is not None and threading.get_ident() == _spawner_ident


def _get_spawner() -> _Spawner | None:
    """This process's spawner, started on first use; None if none can start."""
    global _spawner
    spawner = _spawner
    if spawner is not None and spawner.pid == os.getpid():
        return spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():
            try:
                _spawner = _Spawner()
            except RuntimeError:  # no new threads at interpreter shutdown
                return None
        return _spawner


def _after_fork_in_child() -> None:
    # The parent's spawner thread does not exist here, and its lock may have
    # been held by another parent thread at the moment of fork.
    global _spawner, _spawner_lock, _spawner_ident
    if forked_for_exec():
        return
    # A thread of this child may be given the dead spawner's id.
    _spawner_ident = None
    _spawner = None
    _spawner_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def spawn(argv: list[str]) -> tuple[Any, bool]:
    """Start the proxy; return the Popen and whether it leads its own group.

    Without a terminal (a worker, a service) the proxy gets a session of its
    own, so close() can signal it and everything it started as one group.
    With a terminal it stays in ours, so ``ssh`` can still ask for a
    passphrase there. Errors are raised here, in the caller's thread.
    """
    own_group = not has_controlling_tty()
    spawner = _get_spawner() if _prctl is not None else None
    if spawner is None:
        return _popen(argv, own_group, None), own_group
    return spawner.run(argv, own_group), own_group


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of ``pid``, read from /proc (empty without it)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
