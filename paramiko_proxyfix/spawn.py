"""Starting proxy processes so that none outlives its owner, from a thread that leaves.

On Linux every proxy gets ``PR_SET_PDEATHSIG(SIGKILL)``: when the process that
owns it dies by any means (a SIGKILL from a hard time limit included), the
kernel kills the proxy, even one that ignores SIGTERM and EOF.

That signal follows the *thread* that forked the proxy, not the process, so
proxies are started from one daemon thread, the spawner. It also takes the
waits that must not block their caller (a finalizer run by the garbage
collector). It ends once it has had no work and no live proxy for a short
while, and starts again on demand: a process whose proxies are all closed
has no thread of ours (Python 3.12+ warns on fork() in a threaded process;
a sub-interpreter cannot end while a thread of its own runs).

The signal is set by util-linux's ``setpriv --pdeathsig``, which then execs
the proxy, where root installed it at a fixed path (never from PATH) and
Python starts children with vfork() (3.10+); else in a ``preexec_fn``, which
makes subprocess fork(). Under gevent or eventlet, threads are greenlets on
the main thread: proxies are started directly, and the signal follows the
main thread, which lives as long as the process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from . import registry
from .errors import ProxyCommandStartError
from .execcheck import check_runnable
from .logs import log

__all__ = [
    "forked_for_exec",
    "green_threads",
    "has_controlling_tty",
    "reset_after_fork",
    "run_in_background",
    "spawn",
    "stop_spawner",
]

_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)
#: Seconds without work and without live proxies before the spawner ends.
IDLE_EXIT = 0.2
#: Seconds between the spawner's looks at every live proxy (registry.look_all).
WATCH_EVERY = 1.0
#: Whether a spawner thread is looking at the live proxies now.
watching = False


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


def green_threads() -> bool:
    """Whether gevent or eventlet turned this process's threads into greenlets."""
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched("threading"):
        return True
    eventlet = sys.modules.get("eventlet.patcher")
    return eventlet is not None and bool(eventlet.is_monkey_patched("thread"))


def has_controlling_tty() -> bool:
    """Whether this process has a terminal a proxy could prompt on."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


#: Where util-linux installs setpriv. Never taken from PATH: a directory on
#: PATH that someone else can write would run their program with the proxy's
#: command line.
SETPRIV_PATHS = ("/usr/bin/setpriv", "/bin/setpriv")
#: setpriv's path once known to take --pdeathsig; "" once known unusable.
_setpriv: str | None = None


def _trusted(path: str) -> bool:
    """Whether ``path`` and its directory belong to root and only root may
    change them (no write bit for group or others)."""
    real = os.path.realpath(path)
    try:
        for st in (os.stat(real), os.stat(os.path.dirname(real))):
            if st.st_uid != 0 or st.st_mode & 0o022:
                return False
        return stat.S_ISREG(os.stat(real).st_mode) and os.access(real, os.X_OK)
    except OSError:
        return False


def _find_setpriv() -> str:
    """setpriv(1) at a fixed, root-owned path, if it sets a parent-death
    signal; it saves the fork() a preexec_fn costs."""
    global _setpriv
    if _setpriv is not None:
        return _setpriv
    found = [p for p in SETPRIV_PATHS if _trusted(p)]
    if sys.version_info < (3, 10) or not found:
        _setpriv = ""
        return ""
    path = os.path.realpath(found[0])
    try:
        usage = subprocess.run(
            [path, "--help"], capture_output=True, timeout=5, env={"LC_ALL": "C"}
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""  # maybe out of descriptors for now: ask again next time
    _setpriv = path if b"--pdeathsig" in usage else ""
    return _setpriv


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

    def start(preexec_fn: Callable[[], None] | None) -> Any:
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=own_group,
            preexec_fn=preexec_fn,
        )

    try:
        if setpriv:
            check_runnable(argv[0])
        try:
            process = start(preexec)
        except RuntimeError:
            if preexec is None:
                raise
            # A sub-interpreter (mod_wsgi) cannot run a preexec_fn: start the
            # proxy as upstream does, without the parent-death signal.
            process = start(None)
        process.args = argv  # the command, as upstream has it, not setpriv's
        return process
    except OSError as exc:
        number = exc.errno or errno.EIO
        raise ProxyCommandStartError.for_errno(" ".join(argv), number, argv[0]) from exc
    except RuntimeError as exc:
        raise ProxyCommandStartError(" ".join(argv), str(exc)) from exc


class _Spawner:
    """The daemon thread that forks every proxy of this process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._serve, name="paramiko_proxyfix spawner", daemon=True
        )
        self.thread.start()

    def _serve(self) -> None:
        global _spawner_ident, watching
        _spawner_ident = threading.get_ident()
        watching = True
        looked = time.monotonic()
        try:
            while True:
                try:
                    job = self.jobs.get(timeout=IDLE_EXIT)
                except queue.Empty:
                    job = self._retire()
                    if job is None:
                        return
                if job is None:  # stop_spawner()
                    return
                job()
                del job  # hold no reference to a finished Popen while idle
                if time.monotonic() - looked >= WATCH_EVERY:
                    looked = time.monotonic()
                    _look_all()
        finally:
            watching = False
            try:  # the read loops look for themselves from now on
                registry.arm_all()
            except Exception:
                log.debug("arming the read loops failed", exc_info=True)

    def _retire(self) -> Callable[[], None] | None:
        """End if nothing needs this thread; else the next job (or a no-op)."""
        global _spawner
        with _spawner_lock:
            try:
                return self.jobs.get_nowait()
            except queue.Empty:
                pass
            if registry.has_live():  # their death signal follows this thread
                return lambda: None
            if _spawner is self:
                _spawner = None
            return None

    def submit(self, job: Callable[[], None] | None) -> None:
        self.jobs.put(job)


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()
#: The spawner thread's id; a forked child keeps the id of the forking thread.
_spawner_ident: int | None = None


def _look_all() -> None:
    """``registry.look_all()``; whatever goes wrong there must not end the
    thread every proxy of this process is started by."""
    try:
        registry.look_all()
    except Exception:
        log.debug("a look at the live proxies failed", exc_info=True)


def _submit(job: Callable[[], None]) -> bool:
    """Queue ``job`` on this process's spawner, starting one if needed."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():
            try:
                _spawner = _Spawner()
            except RuntimeError:  # no new threads at interpreter shutdown
                return False
        _spawner.submit(job)
        return True


def run_in_background(job: Callable[[], None]) -> None:
    """Run ``job`` on the spawner thread, or here if no thread can start."""
    if green_threads() or not _submit(job):
        job()


def stop_spawner(timeout: float = 1.0) -> None:
    """End the spawner thread now (interpreter shutdown), waiting for it."""
    global _spawner
    with _spawner_lock:
        spawner, _spawner = _spawner, None
    if spawner is not None and spawner.pid == os.getpid():
        spawner.submit(None)
        if spawner.thread is not threading.current_thread():
            spawner.thread.join(timeout)


def forked_for_exec() -> bool:
    """In an at-fork hook: whether this child is a proxy about to exec.

    Only the spawner forks from its thread, and only to exec: tidying up
    inherited state there would be wasted work.
    """
    return _spawner_ident is not None and threading.get_ident() == _spawner_ident


def reset_after_fork() -> None:
    """In a forked child (see lifecycle.py): the parent's spawner thread does
    not exist here, and another parent thread may have held its lock."""
    global _spawner, _spawner_lock, _spawner_ident, watching
    # A thread of this child may be given the dead spawner's id.
    _spawner_ident = None
    watching = False
    _spawner = None
    _spawner_lock = threading.Lock()


def spawn(argv: list[str]) -> tuple[Any, bool]:
    """Start the proxy; return the Popen and whether it leads its own group.

    Without a terminal (a worker, a service) the proxy gets a session of its
    own, so close() can end it and everything it started as one group. With a
    terminal it stays in ours, so ``ssh`` can still ask for a passphrase
    there. Errors are raised here, in the caller's thread.
    """
    if not argv:
        raise ProxyCommandStartError("", "the command line is empty")
    own_group = not has_controlling_tty()
    if _prctl is None or green_threads():
        return _popen(
            argv, own_group, None if _prctl is None else os.getpid()
        ), own_group
    done = threading.Event()
    result: list[Any] = []
    owner = os.getpid()

    def job() -> None:
        try:
            result.append(_popen(argv, own_group, owner))
        except BaseException as exc:  # handed to the caller, never lost here
            result.append(exc)
        done.set()

    if not _submit(job):
        return _popen(argv, own_group, None), own_group
    done.wait()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0], own_group
