"""``ps``: the proxy processes on this host, read from /proc.

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

A proxy is *orphaned* when its parent is init (pid 1) or gone, and a
*zombie* when it has exited but nobody reaped it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import asdict, dataclass

__all__ = ["ProcUnavailable", "Proxy", "as_json", "find_proxies", "kill", "render"]

_TOOLS = {"nc", "ncat", "netcat", "socat", "connect-proxy", "corkscrew", "proxytunnel"}
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcUnavailable(Exception):
    """There is no usable /proc here (not Linux, or not mounted)."""


@dataclass
class Proxy:
    pid: int
    ppid: int
    age_seconds: float
    state: str  # running | zombie | orphaned
    kind: str  # why it counts as a proxy
    command: str
    start_ticks: int  # to tell this process from a later one with its pid


class _Proc:
    """Readers for one /proc tree (injectable, e.g. a host's /proc mounted
    in a container, or a fake tree in tests)."""

    def __init__(self, root: str) -> None:
        self.root = root
        try:
            with open(os.path.join(root, "uptime")) as f:
                self.uptime = float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            raise ProcUnavailable(
                f"{root} is not a readable proc filesystem (ps needs Linux's /proc)"
            ) from None

    def pids(self) -> list[int]:
        return sorted(int(n) for n in os.listdir(self.root) if n.isdigit())

    def stat(self, pid: int) -> tuple[str, int, int, int] | None:
        """(state letter, ppid, start time in clock ticks, session), or None."""
        try:
            with open(os.path.join(self.root, str(pid), "stat"), "rb") as f:
                raw = f.read()
        except OSError:
            return None
        # The command name may contain spaces and parentheses.
        fields = raw[raw.rfind(b")") + 2 :].split()
        return fields[0].decode(), int(fields[1]), int(fields[19]), int(fields[3])

    def argv(self, pid: int) -> list[str]:
        try:
            with open(os.path.join(self.root, str(pid), "cmdline"), "rb") as f:
                raw = f.read()
        except OSError:
            return []
        return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0") if a]

    def fd(self, pid: int, fd: int) -> str:
        try:
            return os.readlink(os.path.join(self.root, str(pid), "fd", str(fd)))
        except OSError:
            return ""

    def fd_targets(self, pid: int) -> set[str]:
        path = os.path.join(self.root, str(pid), "fd")
        try:
            names = os.listdir(path)
        except OSError:
            return set()
        return {self.fd(pid, int(n)) for n in names if n.isdigit()}

    def is_python(self, pid: int) -> bool:
        try:
            exe = os.readlink(os.path.join(self.root, str(pid), "exe"))
        except OSError:
            argv = self.argv(pid)
            exe = argv[0] if argv else ""
        return os.path.basename(exe).startswith("python")


def _is_ssh_w(argv: list[str]) -> bool:
    if not argv or os.path.basename(argv[0]) != "ssh":
        return False
    return any(a == "-W" or (a.startswith("-W") and len(a) > 2) for a in argv[1:])


def _kind(
    proc: _Proc,
    pid: int,
    ppid: int,
    session: int,
    argv: list[str],
    patterns: list[re.Pattern[str]],
) -> str | None:
    """Why this process counts as a proxy, or None."""
    if _is_ssh_w(argv):
        return "ssh -W"
    command = " ".join(argv)
    if any(p.search(command) for p in patterns):
        return "--match"
    stdio = [proc.fd(pid, n) for n in (0, 1, 2)]
    piped = [t.startswith("pipe:") for t in stdio]
    if argv and os.path.basename(argv[0]) in _TOOLS and all(piped[:2]):
        return "proxy tool on pipes"
    if all(piped) and proc.is_python(ppid) and set(stdio) <= proc.fd_targets(ppid):
        return "proxyfix child" if session == pid else "piped child of python"
    return None


def find_proxies(root: str = "/proc", match: list[str] | None = None) -> list[Proxy]:
    """Every proxy process visible in ``root``; raises ProcUnavailable."""
    proc = _Proc(root)
    patterns = [re.compile(m) for m in match or []]
    me = os.getpid()
    found = []
    for pid in proc.pids():
        stat = proc.stat(pid)
        if stat is None or pid == me:
            continue
        letter, ppid, start, session = stat
        argv = proc.argv(pid)
        kind = _kind(proc, pid, ppid, session, argv, patterns)
        if kind is None and letter == "Z":
            # A zombie has no command line left; its parent tells us more.
            kind = _zombie_kind(proc, pid, ppid)
        if kind is None:
            continue
        if letter == "Z":
            state = "zombie"
        elif ppid <= 1 or proc.stat(ppid) is None:
            state = "orphaned"
        else:
            state = "running"
        found.append(
            Proxy(
                pid=pid,
                ppid=ppid,
                age_seconds=max(0.0, proc.uptime - start / _TICKS),
                state=state,
                kind=kind,
                command=" ".join(argv) or _comm(root, pid),
                start_ticks=start,
            )
        )
    return found


def _comm(root: str, pid: int) -> str:
    try:
        with open(os.path.join(root, str(pid), "comm")) as f:
            return f"[{f.read().strip()}]"
    except OSError:
        return "[?]"


def _zombie_kind(proc: _Proc, pid: int, ppid: int) -> str | None:
    """A zombie ``ssh`` under a Python process: an unreaped ProxyCommand."""
    if _comm(proc.root, pid) == "[ssh]" and proc.is_python(ppid):
        return "ssh (exited)"
    return None


def _still_same(root: str, p: Proxy) -> bool:
    """Whether p.pid is still the process we listed, not a reuse of its pid."""
    stat = _Proc(root).stat(p.pid)
    return stat is not None and stat[2] == p.start_ticks and stat[0] != "Z"


def kill(
    victims: list[Proxy], root: str = "/proc", grace: float = 2.0
) -> dict[int, str]:
    """SIGTERM each, SIGKILL those still there after ``grace`` s; pid -> outcome."""
    outcome: dict[int, str] = {}
    pending = []
    for p in victims:
        if not _still_same(root, p):
            outcome[p.pid] = "already gone"
            continue
        try:
            os.kill(p.pid, signal.SIGTERM)
            pending.append(p)
        except ProcessLookupError:
            outcome[p.pid] = "already gone"
        except PermissionError:
            outcome[p.pid] = "not permitted"
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [p for p in pending if _still_same(root, p)]
    for p in victims:
        outcome.setdefault(p.pid, "terminated (SIGTERM)")
    for p in pending:
        try:
            os.kill(p.pid, signal.SIGKILL)
            outcome[p.pid] = "killed (SIGKILL)"
        except ProcessLookupError:
            pass
        except PermissionError:
            outcome[p.pid] = "not permitted"
    return outcome


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
