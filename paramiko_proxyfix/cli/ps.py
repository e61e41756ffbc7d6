"""``ps``: the proxy processes on this host, read from /proc, and ``--kill-orphans``.

A proxy (no process says "I am a ProxyCommand": heuristics kept narrow) is
``ssh -W``; a known proxy tool (``nc``, ``socat``...) with stdin and stdout
on pipes; a command whose stdin, stdout and stderr are pipes its Python
parent holds (``proxyfix child`` when it also leads a session: this
package's); or whatever matches ``--match``.

It is *orphaned* when no process outside its own subtree (itself and its
descendants) holds its stdin or stdout pipe, whoever its parent is now: a
pipeline's member is not, the commands beside it hold its pipes. Where that
cannot be read it is *unknown*, never orphaned. Each process's descriptors
are read at most once per listing. ``kill`` signals through
:func:`paramiko_proxyfix.gate.pin` only, then decides the state afresh; no
pidfd, no signal. docs/cli.md has the rules in full.
"""

from __future__ import annotations

import os
import re
import select
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .. import gate, procfs
from ..redact import printable

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
    state: str  # running | zombie | orphaned | unknown
    kind: str  # why it counts as a proxy
    command: str
    start_ticks: int  # to tell this process from a later one with its pid
    owner: str  # how the state was decided


def _pipe(target: str) -> bool:
    return target.startswith("pipe:[")


class Scan:
    """One listing of ``root``: stats read once, descriptors at most once."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.stats: dict[int, procfs.ProcStat] = {}
        self._read_stats(procfs.pids(root))
        self._fds: dict[int, dict[int, str] | None] = {}
        self._python: dict[int, bool] = {}
        self._holders: dict[str, set[int]] | None = None
        self._children: dict[int, list[int]] = {}
        self.unreadable: set[int] = set()  # whose descriptors could not be read

    def _read_stats(self, pids: Iterable[int]) -> None:
        found = ((pid, procfs.stat(pid, self.root)) for pid in pids)
        self.stats.update((pid, info) for pid, info in found if info is not None)

    def fds(self, pid: int) -> dict[int, str] | None:
        if pid not in self._fds:
            self._fds[pid] = procfs.descriptors(pid, self.root)
        return self._fds[pid]

    def is_python(self, pid: int) -> bool:
        if pid not in self._python:
            exe = procfs.exe(pid, self.root) or "".join(procfs.argv(pid, self.root)[:1])
            self._python[pid] = os.path.basename(exe).startswith("python")
        return self._python[pid]

    def name(self, pid: int) -> str:
        return f"{pid} ({procfs.comm(pid, self.root)})"

    def holders(self) -> dict[str, set[int]]:
        """Each pipe -> the processes holding it, from every process's descriptors."""
        if self._holders is None:
            self._holders = {}
            pending = list(self.stats)
            for again in (True, False):
                for pid in pending:
                    table = self.fds(pid)
                    if table is None:
                        self.unreadable.add(pid)
                        continue
                    for target in table.values():
                        if _pipe(target):
                            self._holders.setdefault(target, set()).add(pid)
                if again:
                    # A process forked since the listing began may hold a pipe
                    # its parent has closed since: read those once too.
                    pending = [p for p in procfs.pids(self.root) if p not in self._fds]
                    self._read_stats(pending)
            for pid, info in self.stats.items():
                self._children.setdefault(info.ppid, []).append(pid)
        return self._holders

    def subtree(self, pid: int) -> set[int]:
        """``pid`` and its descendants (after :meth:`holders`)."""
        found, stack = {pid}, [pid]
        while stack:
            for child in self._children.get(stack.pop(), []):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def entered(self, pid: int) -> bool:
        """Whether it or an ancestor has parent 0 but is not pid 1 (setns)."""
        seen: set[int] = set()
        while pid in self.stats and pid not in seen:
            seen.add(pid)
            ppid = self.stats[pid].ppid
            if ppid == 0:
                return pid != 1
            pid = ppid
        return False

    def ownership(self, pid: int) -> tuple[str, str]:
        """(state, why) of a live proxy: running, orphaned or unknown."""
        if self.entered(pid):
            return "unknown", (
                "it came in from outside this pid namespace: its owner may be "
                "outside too, where ps cannot see"
            )
        holders = self.holders()
        ours = self.subtree(pid)
        blind = len(self.unreadable - ours)
        unread = (
            f"the descriptors of {blind} other process{'es' * (blind != 1)} "
            "could not be read (not permitted: run as root)"
        )
        mine = self.fds(pid)
        if mine is None:
            return "unknown", f"cannot read its descriptors; {unread}"
        ends = {t for t in (mine.get(0, ""), mine.get(1, "")) if _pipe(t)}
        if not ends:
            return "unknown", "stdin and stdout are not pipes: cannot tell its owner"
        held = sorted(
            {h for end in ends for h in holders.get(end, ()) if h not in ours}
        )
        ppid = self.stats[pid].ppid
        if ppid in held:
            return "running", f"its parent {self.name(ppid)} holds its pipes"
        if held:
            shown = ", ".join(self.name(h) for h in held[:3])
            more = f" and {len(held) - 3} more" if len(held) > 3 else ""
            return "running", f"its pipes are held by {shown}{more}"
        if blind:
            return "unknown", f"no readable process holds its pipes, but {unread}"
        parent = self.name(ppid) if ppid in self.stats else f"{ppid} (gone)"
        return "orphaned", (
            f"its owner is gone: no process outside it holds its pipes "
            f"(its parent now: {parent})"
        )


def _is_ssh_w(argv: list[str]) -> bool:
    if not argv or os.path.basename(argv[0]) != "ssh":
        return False
    return any(a == "-W" or (a.startswith("-W") and len(a) > 2) for a in argv[1:])


def _kind(
    scan: Scan,
    pid: int,
    info: procfs.ProcStat,
    argv: list[str],
    patterns: list[re.Pattern[str]],
) -> str | None:
    """Why this process counts as a proxy, or None."""
    if _is_ssh_w(argv):
        return "ssh -W"
    if any(p.search(" ".join(argv)) for p in patterns):
        return "--match"
    tool = bool(argv) and os.path.basename(argv[0]) in _TOOLS
    if not tool and not scan.is_python(info.ppid):
        return None
    table = scan.fds(pid)
    if table is None:
        return None
    stdio = [table.get(n, "") for n in (0, 1, 2)]
    piped = [_pipe(t) for t in stdio]
    if tool and all(piped[:2]):
        return "proxy tool on pipes"
    if all(piped) and scan.is_python(info.ppid):
        held = scan.fds(info.ppid)
        if held is not None and set(stdio) <= set(held.values()):
            return "proxyfix child" if info.session == pid else "piped child of python"
    return None


def find_proxies(root: str = "/proc", match: list[str] | None = None) -> list[Proxy]:
    """Every proxy process visible in ``root``; raises ProcUnavailable."""
    uptime = procfs.uptime(root)
    if uptime is None:
        raise ProcUnavailable(
            f"{root} is not a readable proc filesystem (ps needs Linux's /proc)"
        )
    patterns = [re.compile(m) for m in match or []]
    me = os.getpid() if procfs.is_ours(root) else None
    scan = Scan(root)
    found = []
    for pid, info in sorted(scan.stats.items()):
        if pid == me:
            continue
        argv = procfs.argv(pid, root)
        kind = _kind(scan, pid, info, argv, patterns)
        if kind is None and info.state == "Z":
            # A zombie has no command line left; its parent tells us more.
            ssh = procfs.comm(pid, root) == "ssh" and scan.is_python(info.ppid)
            kind = "ssh (exited)" if ssh else None
        if kind is None:
            continue
        if info.state == "Z":
            state, why = "zombie", f"exited; its parent {info.ppid} has not reaped it"
        else:
            state, why = scan.ownership(pid)
        age = max(0.0, uptime - info.start_ticks / _TICKS)
        command = " ".join(argv) or f"[{procfs.comm(pid, root)}]"
        found.append(
            Proxy(pid, info.ppid, age, state, kind, command, info.start_ticks, why)
        )
    return found


def _exited(pins: list[gate.Pin], timeout: float) -> set[int]:
    """Wait up to ``timeout`` s; the pids of those that exited."""
    gone: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        left = {p.pidfd: p for p in pins if p.pid not in gone and p.pidfd is not None}
        if not left:
            return gone
        poller = select.poll()
        for fd in left:
            poller.register(fd, select.POLLIN)  # readable once its process exits
        ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
        if not ready:
            return gone
        gone.update(left[fd].pid for fd, _ in ready)


def _pin(root: str, p: Proxy) -> gate.Pin | str:
    """The listed process, pinned, or why it may not be signalled."""
    if not procfs.is_ours(root) or not procfs.same_process(root, p.pid):
        if procfs.is_ours(root) and procfs.stat(p.pid, root) is None:
            return "already gone"
        return f"refused: {root} is not this pid namespace's /proc"
    return gate.pin(p.pid, p.start_ticks, {p.ppid})


def _not_orphaned(scan: Scan, listed: Proxy) -> str | None:
    """None if the listed process is still there and orphaned, else why not."""
    info = scan.stats.get(listed.pid)
    if info is None or info.start_ticks != listed.start_ticks or info.state == "Z":
        return "already gone"
    state, why = scan.ownership(listed.pid)
    return None if state == "orphaned" else f"refused: now {state} ({why})"


def kill(
    victims: list[Proxy], root: str = "/proc", grace: float = 2.0
) -> dict[int, str]:
    """SIGTERM each orphan, SIGKILL those still there after ``grace`` s;
    pid -> outcome. Each is pinned first, then must still be orphaned."""
    outcome: dict[int, str] = {}
    pinned: list[gate.Pin] = []
    signalled: list[gate.Pin] = []
    try:
        for p in victims:
            pin = _pin(root, p)
            if isinstance(pin, str):
                outcome[p.pid] = pin
            else:
                pinned.append(pin)
        # Decided again now that each is pinned: a listing may have raced a
        # process handing its pipes to a child it had just forked.
        scan = Scan(root)
        for pin in pinned:
            listed = next(p for p in victims if p.pid == pin.pid)
            sent = _not_orphaned(scan, listed) or pin.send(signal.SIGTERM)
            if sent is None:
                signalled.append(pin)
            else:
                outcome[pin.pid] = sent
        gone = _exited(signalled, grace)
        for pin in signalled:
            outcome[pin.pid] = "terminated (SIGTERM)"
            if pin.pid not in gone:
                sent = pin.send(signal.SIGKILL)
                if sent != "already gone":
                    outcome[pin.pid] = sent or "killed (SIGKILL)"
    finally:
        for pin in pinned:
            pin.close()
    return outcome


def _age(seconds: float) -> str:
    for unit, size, below in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800)):
        if seconds < below:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def notes(proxies: list[Proxy]) -> list[str]:
    """One line per proxy: why it is in its state."""
    return [f"{p.pid:>7}  {p.state}: {printable(p.owner)}" for p in proxies]


def render(proxies: list[Proxy], empty: str | None = None) -> str:
    """A table for people: what other users control is escaped (``\\x1b``)."""
    if not proxies:
        return empty or "no proxy processes found"
    kind_w = max(len("KIND"), *(len(p.kind) for p in proxies))
    lines = [
        f"{'PID':>7} {'PPID':>7} {'AGE':>5}  {'STATE':<9} {'KIND':<{kind_w}}  COMMAND"
    ]
    for p in proxies:
        lines.append(
            f"{p.pid:>7} {p.ppid:>7} {_age(p.age_seconds):>5}  {p.state:<9} "
            f"{printable(p.kind):<{kind_w}}  {printable(p.command)}"
        )
    return "\n".join([*lines, "", *notes(proxies)])


def as_json(proxies: list[Proxy]) -> list[dict[str, object]]:
    """The exact values (JSON escapes control characters itself)."""
    return [asdict(p) for p in proxies]
