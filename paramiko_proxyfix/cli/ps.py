"""``ps``: the proxy processes on this host, read from /proc, and ``--kill-orphans``.

What counts as a proxy (no process says "I am a ProxyCommand", so these are
heuristics, kept narrow enough to be safe for ``--kill-orphans``):

- ``ssh`` run with ``-W`` (``ssh -W host:port bastion``), the usual proxy;
- a known proxy tool (``nc``, ``ncat``, ``socat``, ``connect-proxy``,
  ``corkscrew``, ``proxytunnel``) whose stdin and stdout are pipes, as a
  ProxyCommand's are;
- any other command whose stdin, stdout and stderr are pipes held by its
  parent, when that parent is a Python process: what paramiko's
  ProxyCommand starts. When it also leads a session of its own, it was
  started by this package (without a terminal, it gives each proxy one).
  Only a live parent shows this, so such a proxy is never reported as an
  orphan;
- anything matching a ``--match`` pattern.

A proxy is *orphaned* when its owner is gone, which is read from its parent,
never from the parent's pid: a ProxyCommand's owner holds the other ends of
the proxy's stdin and stdout pipes, and when the owner dies the kernel hands
the proxy to init or to the nearest subreaper (systemd user managers, tini),
which holds none of them. So: the parent is gone, or the parent holds none of
the pipes (or sockets) on the proxy's stdin and stdout. A service running as
pid 1 (a container, ``unshare --pid``) owns its proxies like any parent. When
that cannot be read (stdin and stdout are not pipes, or the parent's
descriptors are not readable), the state is *unknown*, never *orphaned*.
A *zombie* has exited but nobody reaped it.

``kill`` signals a process only through a pidfd opened while its start time
still matched the listing, so a pid reused in between is never signalled.
"""

from __future__ import annotations

import os
import re
import select
import signal
import time
from dataclasses import asdict, dataclass
from typing import Callable

from .. import procfs

__all__ = ["ProcUnavailable", "Proxy", "as_json", "find_proxies", "kill", "render"]

_TOOLS = {"nc", "ncat", "netcat", "socat", "connect-proxy", "corkscrew", "proxytunnel"}
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcUnavailable(Exception):
    """There is no usable /proc here (not Linux, or not mounted)."""


# -- /proc access: every read of the proc tree goes through these -----------------


def read_uptime(root: str) -> float:
    try:
        with open(os.path.join(root, "uptime")) as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        raise ProcUnavailable(
            f"{root} is not a readable proc filesystem (ps needs Linux's /proc)"
        ) from None


def list_pids(root: str) -> list[int]:
    return sorted(procfs.pids(root))


def read_stat(root: str, pid: int) -> procfs.ProcStat | None:
    """The process's stat fields, or None if it is gone."""
    return procfs.stat(pid, root)


def read_argv(root: str, pid: int) -> list[str]:
    try:
        with open(os.path.join(root, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0") if a]


def read_comm(root: str, pid: int) -> str:
    try:
        with open(os.path.join(root, str(pid), "comm")) as f:
            return f.read().strip()
    except OSError:
        return "?"


def read_exe(root: str, pid: int) -> str:
    try:
        return os.readlink(os.path.join(root, str(pid), "exe"))
    except OSError:
        return ""


def read_fd(root: str, pid: int, fd: int) -> str:
    """What descriptor ``fd`` is (``pipe:[INODE]``...), "" if unreadable."""
    try:
        return os.readlink(os.path.join(root, str(pid), "fd", str(fd)))
    except OSError:
        return ""


def read_fds(root: str, pid: int) -> set[str] | None:
    """What all the process's descriptors are; None if they cannot be read."""
    path = os.path.join(root, str(pid), "fd")
    try:
        names = os.listdir(path)
    except OSError:
        return None
    return {read_fd(root, pid, int(n)) for n in names if n.isdigit()}


def proc_is_ours(root: str, pid: int) -> bool:
    """Whether ``root``'s entry for ``pid`` is the process this process calls pid.

    Checked before signalling: a proc tree of another pid namespace (a host's
    /proc mounted in a container) numbers other processes.
    """
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return False  # our /proc belongs to another pid namespace
        theirs, ours = os.stat(os.path.join(root, str(pid))), os.stat(f"/proc/{pid}")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


# -- what is a proxy, and who owns it ---------------------------------------------


@dataclass
class Proxy:
    pid: int
    ppid: int
    age_seconds: float
    state: str  # running | zombie | orphaned | unknown
    kind: str  # why it counts as a proxy
    command: str
    start_ticks: int  # to tell this process from a later one with its pid
    owner: str  # how the state was decided


def _is_python(root: str, pid: int) -> bool:
    exe = read_exe(root, pid)
    if not exe:
        argv = read_argv(root, pid)
        exe = argv[0] if argv else ""
    return os.path.basename(exe).startswith("python")


def _is_ssh_w(argv: list[str]) -> bool:
    if not argv or os.path.basename(argv[0]) != "ssh":
        return False
    return any(a == "-W" or (a.startswith("-W") and len(a) > 2) for a in argv[1:])


#: The descriptors of a process, read once per listing: a worker with
#: thousands of descriptors may be the parent of many proxies.
Held = Callable[[int], "set[str] | None"]


def _kind(
    root: str,
    pid: int,
    stat: procfs.ProcStat,
    argv: list[str],
    patterns: list[re.Pattern[str]],
    held_by: Held,
) -> str | None:
    """Why this process counts as a proxy, or None."""
    if _is_ssh_w(argv):
        return "ssh -W"
    command = " ".join(argv)
    if any(p.search(command) for p in patterns):
        return "--match"
    stdio = [read_fd(root, pid, n) for n in (0, 1, 2)]
    piped = [t.startswith("pipe:") for t in stdio]
    if argv and os.path.basename(argv[0]) in _TOOLS and all(piped[:2]):
        return "proxy tool on pipes"
    if all(piped) and _is_python(root, stat.ppid):
        held = held_by(stat.ppid)
        if held is not None and set(stdio) <= held:
            return "proxyfix child" if stat.session == pid else "piped child of python"
    return None


def _zombie_kind(root: str, pid: int, ppid: int) -> str | None:
    """A zombie ``ssh`` under a Python process: an unreaped ProxyCommand."""
    if read_comm(root, pid) == "ssh" and _is_python(root, ppid):
        return "ssh (exited)"
    return None


def _channel(target: str) -> bool:
    """A descriptor that names one pipe or socket (``/dev/null`` names many)."""
    return target.startswith(("pipe:[", "socket:["))


def ownership(root: str, pid: int, ppid: int, held_by: Held) -> tuple[str, str]:
    """(state, why) of a live proxy: running, orphaned or unknown."""
    if ppid == 0:
        return "unknown", "its parent is outside this pid namespace"
    if read_stat(root, ppid) is None:
        return "orphaned", f"its parent {ppid} is gone"
    name = f"{ppid} ({read_comm(root, ppid)})"
    ends = {t for t in (read_fd(root, pid, 0), read_fd(root, pid, 1)) if _channel(t)}
    if not ends:
        return "unknown", "stdin and stdout are not pipes: cannot tell its owner"
    held = held_by(ppid)
    if held is None:
        return "unknown", f"cannot read the descriptors of its parent {name}"
    if ends & held:
        return "running", f"its parent {name} holds its pipes"
    # The owner died and the kernel handed the proxy to init or a subreaper.
    return "orphaned", f"re-parented to {name}, which holds none of its pipes"


def find_proxies(root: str = "/proc", match: list[str] | None = None) -> list[Proxy]:
    """Every proxy process visible in ``root``; raises ProcUnavailable."""
    uptime = read_uptime(root)
    patterns = [re.compile(m) for m in match or []]
    me = os.getpid()
    found = []
    fds: dict[int, set[str] | None] = {}

    def held_by(pid: int) -> set[str] | None:
        if pid not in fds:
            fds[pid] = read_fds(root, pid)
        return fds[pid]

    for pid in list_pids(root):
        stat = read_stat(root, pid)
        if stat is None or pid == me:
            continue
        argv = read_argv(root, pid)
        kind = _kind(root, pid, stat, argv, patterns, held_by)
        if kind is None and stat.state == "Z":
            # A zombie has no command line left; its parent tells us more.
            kind = _zombie_kind(root, pid, stat.ppid)
        if kind is None:
            continue
        if stat.state == "Z":
            state, why = "zombie", f"exited; its parent {stat.ppid} has not reaped it"
        else:
            state, why = ownership(root, pid, stat.ppid, held_by)
        found.append(
            Proxy(
                pid=pid,
                ppid=stat.ppid,
                age_seconds=max(0.0, uptime - stat.start_ticks / _TICKS),
                state=state,
                kind=kind,
                command=" ".join(argv) or f"[{read_comm(root, pid)}]",
                start_ticks=stat.start_ticks,
                owner=why,
            )
        )
    return found


# -- killing ----------------------------------------------------------------------

_pidfd_open = getattr(os, "pidfd_open", None)
_pidfd_send_signal = getattr(signal, "pidfd_send_signal", None)


class _Pinned:
    """One listed process, held so that no other process can be signalled.

    With a pidfd (Linux 5.3+), the kernel guarantees it; without one, the
    start time is read again right before each signal.
    """

    def __init__(self, listed: Proxy, pidfd: int | None) -> None:
        self.listed = listed
        self.pid = listed.pid
        self.pidfd = pidfd

    def same(self) -> bool:
        """Still the listed process, and not exited."""
        stat = read_stat("/proc", self.pid)
        return (
            stat is not None
            and stat.start_ticks == self.listed.start_ticks
            and stat.state != "Z"
        )

    def send(self, sig: int) -> str | None:
        """None once sent, else why not."""
        try:
            if self.pidfd is not None and _pidfd_send_signal is not None:
                _pidfd_send_signal(self.pidfd, sig)
            elif self.same():
                os.kill(self.pid, sig)
            else:
                return "already gone"
        except ProcessLookupError:
            return "already gone"
        except PermissionError:
            return "not permitted"
        return None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _pin(root: str, p: Proxy) -> _Pinned | str:
    """The listed process, pinned, or why it cannot be signalled."""
    if not proc_is_ours(root, p.pid):
        if read_stat(root, p.pid) is None:
            return "already gone"
        return f"refused: {root} is not this pid namespace's /proc"
    pidfd: int | None = None
    if _pidfd_open is not None and _pidfd_send_signal is not None:
        try:
            pidfd = _pidfd_open(p.pid)
        except ProcessLookupError:
            return "already gone"
        except OSError:
            pidfd = None  # no pidfd here (old kernel, seccomp): re-check instead
    pinned = _Pinned(p, pidfd)
    # Opened first, checked second: if the start time still matches, the
    # pidfd was opened on the listed process, not on a later one with its pid.
    if not pinned.same():
        pinned.close()
        return "already gone"
    return pinned


def _exited(pinned: list[_Pinned], timeout: float) -> set[int]:
    """Wait up to ``timeout`` s; the pids of those that exited."""
    gone: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        left = [t for t in pinned if t.pid not in gone]
        by_fd = {t.pidfd: t for t in left if t.pidfd is not None}
        # A pidfd turns readable when its process exits.
        if by_fd:
            poller = select.poll()
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            gone.update(by_fd[fd].pid for fd, _ in poller.poll(0))
        gone.update(t.pid for t in left if t.pidfd is None and not t.same())
        now = time.monotonic()
        if len(gone) == len(pinned) or now >= deadline:
            return gone
        time.sleep(min(0.05, deadline - now))


def kill(
    victims: list[Proxy], root: str = "/proc", grace: float = 2.0
) -> dict[int, str]:
    """SIGTERM each, SIGKILL those still there after ``grace`` s; pid -> outcome."""
    outcome: dict[int, str] = {}
    signalled: list[_Pinned] = []
    try:
        for p in victims:
            pinned = _pin(root, p)
            if isinstance(pinned, str):
                outcome[p.pid] = pinned
                continue
            why = pinned.send(signal.SIGTERM)
            if why is None:
                signalled.append(pinned)
            else:
                outcome[p.pid] = why
                pinned.close()
        gone = _exited(signalled, grace)
        for t in signalled:
            outcome[t.pid] = "terminated (SIGTERM)"
            if t.pid not in gone:
                why = t.send(signal.SIGKILL)
                if why != "already gone":
                    outcome[t.pid] = why or "killed (SIGKILL)"
    finally:
        for t in signalled:
            t.close()
    return outcome


# -- output -----------------------------------------------------------------------


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def render(proxies: list[Proxy]) -> str:
    if not proxies:
        return "no proxy processes found"
    kind_w = max(len("KIND"), *(len(p.kind) for p in proxies))
    lines = [
        f"{'PID':>7} {'PPID':>7} {'AGE':>5}  {'STATE':<9} {'KIND':<{kind_w}}  COMMAND"
    ]
    for p in proxies:
        lines.append(
            f"{p.pid:>7} {p.ppid:>7} {_age(p.age_seconds):>5}  {p.state:<9} "
            f"{p.kind:<{kind_w}}  {p.command}"
        )
    return "\n".join(lines)


def as_json(proxies: list[Proxy]) -> list[dict[str, object]]:
    return [asdict(p) for p in proxies]
