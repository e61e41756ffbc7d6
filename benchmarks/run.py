"""Benchmark: upstream paramiko vs paramiko-proxyfix vs a direct socket.

    python benchmarks/run.py [--quick] [--json PATH] [--only FIGURE,...]

Starts its own sshd on 127.0.0.1 and measures, in one run on one machine:
a direct TCP socket, and upstream paramiko (the fix uninstalled) and the fix,
each through a plain relay (``socat -b 65536 - TCP:...``) and through a real
``ssh -W`` to the same sshd; transfers also through socat with its default
8 KiB buffer. Every measurement runs in a fresh interpreter under a
wall-clock cap, because upstream spins forever once its proxy is dead.
Repeated measurements go round-robin over the setups, so a noisy neighbour
slows all of them alike; the ratios within one run are what to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from _sshd import Sshd  # this directory is first on sys.path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MiB = 2**20
Result = dict[str, Any]

# name -> (impl, path); impl "direct" runs upstream paramiko on a TCP socket.
SETUPS: dict[str, tuple[str, str]] = {
    "direct": ("direct", "tcp"),
    "upstream/relay": ("upstream", "relay"),
    "fix/relay": ("fix", "relay"),
    "upstream/relay-8k": ("upstream", "relay-8k"),
    "fix/relay-8k": ("fix", "relay-8k"),
    "upstream/ssh-W": ("upstream", "ssh-W"),
    "fix/ssh-W": ("fix", "ssh-W"),
}
PATHS = ("relay", "relay-8k", "ssh-W")
#: The relay's buffer. socat's default, 8 KiB, costs the relay process about
#: 1 ms of CPU per MiB, as much as sshd's encryption: on 2 cores that, not
#: the client, sets the pace. 64 KiB (a pipe's size) makes it a thin relay.
RELAY_BUFFER = 65536
#: Paths measured for transfers only: the rest is the same as for "relay".
TRANSFER_ONLY = ("relay-8k",)
TITLES = {
    "relay": f"a plain relay (socat -b {RELAY_BUFFER})",
    "relay-8k": "socat with its default 8 KiB buffer (transfers only)",
    "ssh-W": "ssh -W",
}


class Plan:
    """How much to measure: the full run, or --quick for a smoke run."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.size = 8 * MiB if quick else 64 * MiB
        self.transfer_rounds = 1 if quick else 9
        self.latency_rounds = 1 if quick else 5
        self.latency_n = 4 if quick else 8
        self.spawn_n = 5 if quick else 20
        self.detect_n = 3 if quick else 15
        self.detect_cap = 1.0 if quick else 2.0
        self.idle_count = 20 if quick else 200
        self.idle_seconds = 2.0 if quick else 5.0
        self.idle_rounds = 1 if quick else 5
        self.many_count = 60 if quick else 1000


# -- running one measurement -------------------------------------------------


def run_child(cfg: dict[str, Any], cap: float) -> Result:
    """Run _child.py with ``cfg`` in its own session; kill it all at ``cap``."""
    proc = _start(cfg)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        # Upstream's proxies share the child's process group; whatever of it
        # survived the child goes now.
        _kill_group(proc.pid)
    return _result(proc, out, err, cap if timed_out else None)


def run_together(cfgs: list[dict[str, Any]], cap: float, barrier: Path) -> list[Result]:
    """Run a child per config at once; they measure the same seconds (each
    waits at ``barrier`` once ready, see _child.py)."""
    procs = [_start(cfg) for cfg in cfgs]
    deadline = time.monotonic() + cap
    try:
        ready = {f"{barrier}.{p.pid}" for p in procs}
        while not all(os.path.exists(r) for r in ready) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.02)
        Path(f"{barrier}.go").touch()
        results = []
        for proc in procs:
            timed_out = None
            try:
                out, err = proc.communicate(
                    timeout=max(1.0, deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                timed_out = cap
                _kill_group(proc.pid)
                out, err = proc.communicate()
            results.append(_result(proc, out, err, timed_out))
        return results
    finally:
        for proc in procs:
            _kill_group(proc.pid)
        for name in glob.glob(f"{barrier}.*"):
            os.unlink(name)


def _start(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    """_child.py for ``cfg``, in a session of its own (see _kill_group)."""
    env = dict(os.environ)
    env.pop("PARAMIKO_PROXYFIX_DISABLE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    return subprocess.Popen(
        [sys.executable, str(HERE / "_child.py"), json.dumps(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(ROOT),
        start_new_session=True,
    )


def _result(
    proc: subprocess.Popen[bytes], out: bytes, err: bytes, timed_out: float | None
) -> Result:
    """The child's last JSON line, or why it gave none (``timed_out``: the
    cap it was killed at)."""
    lines = [
        ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")
    ]
    if proc.returncode == 0 and lines:
        result: Result = json.loads(lines[-1])
        return result
    tail = err.decode(errors="replace").strip().splitlines()[-3:]
    why = (
        f"exit {proc.returncode}"
        if timed_out is None
        else f"timed out after {timed_out:.0f}s"
    )
    return {"failed": f"{why}: {' | '.join(tail)}"}


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the measurements ----------------------------------------------------------


class Bench:
    def __init__(self, sshd: Sshd, plan: Plan, setups: list[str]) -> None:
        self.sshd = sshd
        self.plan = plan
        self.setups = setups
        self.file = sshd.workdir / "payload.bin"
        data = os.urandom(plan.size)
        self.file.write_bytes(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.raw: dict[str, dict[str, Any]] = {name: {} for name in setups}

    def config(self, setup: str, measure: str, **extra: Any) -> dict[str, Any]:
        impl, path = SETUPS[setup]
        proxy = None
        target = f"TCP:{self.sshd.host}:{self.sshd.port}"
        if path == "relay":
            proxy = shlex.join(["socat", "-b", str(RELAY_BUFFER), "-", target])
        elif path == "relay-8k":
            proxy = shlex.join(["socat", "-", target])
        elif path == "ssh-W":
            proxy = self.sshd.sshw_command()
        cfg = {
            "measure": measure,
            "impl": impl,
            "proxy": proxy,
            "host": self.sshd.host,
            "port": self.sshd.port,
            "user": self.sshd.user,
            "key": str(self.sshd.client_key),
            "known_hosts": str(self.sshd.known_hosts),
        }
        cfg.update(extra)
        return cfg

    def measured(self, measure: str) -> list[str]:
        """The setups ``measure`` runs on: transfer-only paths only transfer."""
        if measure == "transfer":
            return self.setups
        return [s for s in self.setups if SETUPS[s][1] not in TRANSFER_ONLY]

    def _rounds(self, measure: str, rounds: int, cap: float, **extra: Any) -> None:
        """``rounds`` children per setup, round-robin, each order rotated."""
        setups = self.measured(measure)
        for r in range(rounds):
            order = setups[r % len(setups) :] + setups[: r % len(setups)]
            for setup in order:
                progress(f"  {measure} {r + 1}/{rounds} {setup}")
                res = run_child(self.config(setup, measure, **extra), cap)
                self.raw[setup].setdefault(measure, []).append(res)

    def transfer(self) -> None:
        self._rounds(
            "transfer",
            self.plan.transfer_rounds,
            cap=120 + self.plan.size / MiB * 3,
            size=self.plan.size,
            file=str(self.file),
            sha256=self.sha256,
            put_path=str(self.sshd.workdir / "put.bin"),
        )

    def latency(self) -> None:
        self._rounds(
            "latency", self.plan.latency_rounds, cap=120, n=self.plan.latency_n
        )

    def spawn(self) -> None:
        for setup in self.measured("spawn"):
            if SETUPS[setup][0] == "direct":
                continue
            progress(f"  spawn {setup}")
            cfg = self.config(setup, "spawn", n=self.plan.spawn_n, ballast_mib=512)
            self.raw[setup]["spawn"] = run_child(cfg, 120)

    def detect(self) -> None:
        for setup in self.measured("detect"):
            impl, _ = SETUPS[setup]
            if impl == "direct":
                continue
            n = 1 if impl == "upstream" else self.plan.detect_n
            progress(f"  detect {setup} (x{n})")
            cfg = self.config(setup, "detect", n=n, cap=self.plan.detect_cap)
            self.raw[setup]["detect"] = run_child(
                cfg, 60 + n * (self.plan.detect_cap + 2)
            )

    def idle(self) -> None:
        # In rounds, and upstream and the fix of one path at the same moment
        # (two processes, the same seconds measured): a noisy neighbour then
        # weighs on both alike. The median of the rounds is what is compared.
        groups: dict[str, list[str]] = {}
        for setup in self.measured("idle"):
            groups.setdefault(SETUPS[setup][1], []).append(setup)
        barrier = self.sshd.workdir / "idle-barrier"
        extra = {"count": self.plan.idle_count, "seconds": self.plan.idle_seconds}
        for r in range(self.plan.idle_rounds):
            for setups in groups.values():
                progress(f"  idle {r + 1}/{self.plan.idle_rounds} {' + '.join(setups)}")
                cfgs = [
                    self.config(s, "idle", barrier=str(barrier), **extra)
                    for s in setups
                ]
                for setup, res in zip(setups, run_together(cfgs, 300, barrier)):
                    self.raw[setup].setdefault("idle", []).append(res)

    def many(self) -> None:
        for setup in self.measured("many"):
            if SETUPS[setup][1] == "ssh-W":
                # The relay shows the client's limits; ssh -W would double
                # sshd's load for nothing more.
                continue
            progress(f"  many {setup} ({self.plan.many_count} connections)")
            cfg = self.config(setup, "many", count=self.plan.many_count, timeout=10)
            self.raw[setup]["many"] = run_child(cfg, 420)


FIGURES: dict[str, Callable[[Bench], None]] = {
    "transfer": Bench.transfer,
    "latency": Bench.latency,
    "spawn": Bench.spawn,
    "detect": Bench.detect,
    "idle": Bench.idle,
    "many": Bench.many,
}


# -- summarising -------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """One number (or verdict) per figure and setup; failures become text."""
    s: dict[str, Any] = {}
    runs = [r for r in raw.get("transfer", []) if "failed" not in r]
    if raw.get("transfer"):
        for kind in ("channel", "sftp_get", "sftp_put"):
            s[f"{kind}_mib_s"] = _median([r[kind]["mib_s"] for r in runs])
            cpu = _median([r[kind]["cpu_s_per_mib"] for r in runs])
            s[f"{kind}_cpu_ms_per_mib"] = None if cpu is None else cpu * 1000
        if len(runs) < len(raw["transfer"]):
            s["transfer_failed"] = [
                r["failed"] for r in raw["transfer"] if "failed" in r
            ]
    if raw.get("latency"):
        ok = [r for r in raw["latency"] if "failed" not in r]
        conn = _median([x for r in ok for x in r["connect"]])
        close = _median([x for r in ok for x in r["close"]])
        s["connect_ms"] = None if conn is None else conn * 1000
        s["close_ms"] = None if close is None else close * 1000
        if len(ok) < len(raw["latency"]):
            s["latency_failed"] = [r["failed"] for r in raw["latency"] if "failed" in r]
    sp = raw.get("spawn")
    if sp is not None and "failed" not in sp:
        s["spawn_small_ms"] = statistics.median(sp["small"]) * 1000
        s["spawn_big_ms"] = statistics.median(sp["big"]) * 1000
    d = raw.get("detect")
    if d is not None:
        if "failed" in d:
            s["detect"] = d["failed"]
        else:
            found = [t for t in d["times"] if t is not None]
            if len(found) < len(d["times"]):
                s["detect"] = f"never (> {d['cap']:g} s)"
            else:
                s["detect_ms"] = _median(found) * 1000  # type: ignore[operator]
                s["detect_max_ms"] = max(found) * 1000
            if d["cpu_after_kill"] is not None:
                s["cpu_after_kill_pct"] = d["cpu_after_kill"] * 100
    idle = raw.get("idle")
    if idle:
        ok = [r for r in idle if "failed" not in r]
        if ok:
            s["idle_cpu_pct"] = statistics.median(r["cpu_share"] for r in ok) * 100
            # Round by round (upstream and the fix measured the same seconds).
            s["idle_rounds"] = [r.get("cpu_share") for r in idle]
            s["idle_connected"] = min(r["connected"] for r in ok)
        if len(ok) < len(idle):
            s["idle_failed"] = [r["failed"] for r in idle if "failed" in r]
    m = raw.get("many")
    if m is not None:
        s["many"] = m
    return s


# name, label, unit, better ("up" / "down" / None for information only)
ROWS = [
    ("channel_mib_s", "channel throughput", "MiB/s", "up"),
    ("sftp_get_mib_s", "SFTP get", "MiB/s", "up"),
    ("sftp_put_mib_s", "SFTP put", "MiB/s", "up"),
    ("channel_cpu_ms_per_mib", "client CPU, channel", "ms/MiB", "down"),
    ("sftp_get_cpu_ms_per_mib", "client CPU, SFTP get", "ms/MiB", "down"),
    ("sftp_put_cpu_ms_per_mib", "client CPU, SFTP put", "ms/MiB", "down"),
    ("connect_ms", "connect+auth+exec (median)", "ms", "down"),
    ("close_ms", "close() (the fix waits for the proxy)", "ms", "down"),
    ("spawn_small_ms", "ProxyCommand() start, small process", "ms", "down"),
    ("spawn_big_ms", "ProxyCommand() start, 512 MiB process", "ms", "down"),
    ("detect_ms", "detect a killed proxy (median)", "ms", "down"),
    ("cpu_after_kill_pct", "CPU after the kill", "% core", "down"),
    ("idle_cpu_pct", "idle CPU, N idle connections", "% core", "down"),
]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (str, int)):
        return str(v)
    a = abs(v)
    return (
        f"{v:.0f}"
        if a >= 100
        else f"{v:.1f}"
        if a >= 10
        else f"{v:.2f}"
        if a >= 1
        else f"{v:.3f}"
    )


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return f"{a / b:.2f}"
    return "-"


def table(summary: dict[str, dict[str, Any]], plan: Plan) -> str:
    """Markdown: one table per proxy path, ratios in the last columns."""
    out = []
    direct = summary.get("direct", {})
    for path in PATHS:
        up = summary.get(f"upstream/{path}")
        fix = summary.get(f"fix/{path}")
        if up is None and fix is None:
            continue
        up, fix = up or {}, fix or {}
        out.append(f"\n### through {TITLES[path]}\n")
        out.append(
            "| figure | unit | direct | upstream | fix "
            "| fix/direct | fix/upstream | upstream/direct |"
        )
        out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for key, label, unit, _ in ROWS:
            label = label.replace("N idle", f"{plan.idle_count} idle")
            d = direct.get(key)
            u = up.get(key, up.get(key.rsplit("_", 1)[0]))
            f = fix.get(key, fix.get(key.rsplit("_", 1)[0]))
            if u is None and f is None and (d is None or path in TRANSFER_ONLY):
                continue
            out.append(
                f"| {label} | {unit} | {_fmt(d)} | {_fmt(u)} | {_fmt(f)} | "
                f"{_ratio(f, d)} | {_ratio(f, u)} | {_ratio(u, d)} |"
            )
        if path == "relay" and (up.get("many") or fix.get("many")):
            out.append(
                f"| {plan.many_count} connections at once, one process | "
                f"open+channel | {_many(direct.get('many'))} | "
                f"{_many(up.get('many'))} | {_many(fix.get('many'))} | | | |"
            )
    return "\n".join(out)


def _many(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    if "failed" in m:
        return f"failed: {m['failed'][:80]}"
    text = f"{m['channels']}/{m['count']} work"
    if m["error_count"]:
        cause = (m["transport_errors"] or m["errors"])[0]
        text += f"; then {m['error_count']} fail (…{cause[-45:]}) and the run stops"
    text += f"; highest fd {m['highest_fd']}"
    if m["zombies_left"] or m["children_left"]:
        text += (
            f"; after close: {m['zombies_left']} zombies, {m['children_left']} running"
        )
    return text


def targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets (issues 5 and 17), each with the measured value and a verdict."""
    d = summary.get("direct", {})
    ur, fr = summary.get("upstream/relay", {}), summary.get("fix/relay", {})
    uw, fw = summary.get("upstream/ssh-W", {}), summary.get("fix/ssh-W", {})

    def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
        x, y = a.get(key), b.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y:
            return float(x) / float(y)
        return None

    def paired(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
        """The median of a/b over rounds measured at the same moment."""
        rs = [x / y for x, y in zip(a.get(key) or [], b.get(key) or []) if x and y]
        return statistics.median(rs) if rs else None

    many = fr.get("many") or {}
    rows = [
        ("relay throughput fix/direct", ratio(fr, d, "channel_mib_s"), ">=", 0.95),
        ("relay throughput fix/upstream", ratio(fr, ur, "channel_mib_s"), ">=", 1.1),
        ("ssh -W throughput fix/upstream", ratio(fw, uw, "channel_mib_s"), ">=", 1.0),
        ("relay connect latency fix/direct", ratio(fr, d, "connect_ms"), "<=", 1.05),
        (
            "relay CPU/MiB fix/upstream",
            ratio(fr, ur, "channel_cpu_ms_per_mib"),
            "<=",
            1.0,
        ),
        (
            "ssh -W CPU/MiB fix/upstream",
            ratio(fw, uw, "channel_cpu_ms_per_mib"),
            "<=",
            1.0,
        ),
        ("relay detect median (ms)", fr.get("detect_ms"), "<=", 3.0),
        ("ssh -W detect median (ms)", fw.get("detect_ms"), "<=", 3.0),
        ("relay idle CPU fix/upstream", paired(fr, ur, "idle_rounds"), "<=", 1.0),
        ("ssh -W idle CPU fix/upstream", paired(fw, uw, "idle_rounds"), "<=", 1.0),
        (
            "concurrent connections working (fix/relay)",
            many.get("channels") if "failed" not in many else None,
            ">=",
            many.get("count", 1000),
        ),
    ]
    result = []
    for name, value, op, goal in rows:
        met = (
            None if value is None else (value >= goal if op == ">=" else value <= goal)
        )
        result.append(
            {"target": name, "value": value, "goal": f"{op} {goal:g}", "met": met}
        )
    return result


def targets_text(rows: list[dict[str, Any]]) -> str:
    lines = [
        "\n### targets (issues 5 and 17)\n",
        "| target | goal | measured | met |",
        "| --- | --- | ---: | --- |",
    ]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"| {r['target']} | {r['goal']} | {_fmt(r['value'])} | {met} |")
    return "\n".join(lines)


# -- the machine -------------------------------------------------------------


def _cmd(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (
        (p.stdout or p.stderr).strip().splitlines()[0]
        if (p.stdout or p.stderr)
        else "?"
    )


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import paramiko

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": paramiko.__version__,
        "openssh": _cmd(["ssh", "-V"]),
        "socat": _cmd(["socat", "-V"])
        .replace(
            "socat by Gerhard Rieger and contributors - see www.dest-unreach.org", ""
        )
        .strip()
        or _cmd(["sh", "-c", "socat -V | sed -n 2p"]),
        "commit": _cmd(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "loadavg_start": os.getloadavg(),
        "root": os.getuid() == 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="small sizes and counts: a smoke run"
    )
    ap.add_argument(
        "--json",
        help="where to write the results (default: benchmarks/latest.json, "
        "or a temporary file with --quick, so a smoke run never replaces it)",
    )
    ap.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma list of {','.join(FIGURES)}"
    )
    ap.add_argument(
        "--setups", default=",".join(SETUPS), help=f"comma list of {','.join(SETUPS)}"
    )
    args = ap.parse_args()
    for tool in ("socat", "ssh"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install socat openssh-client")
    plan = Plan(args.quick)
    setups = [s for s in args.setups.split(",") if s]
    figures = [f for f in args.only.split(",") if f]
    for name in setups:
        if name not in SETUPS:
            raise SystemExit(f"unknown setup {name!r}")
    for name in figures:
        if name not in FIGURES:
            raise SystemExit(f"unknown figure {name!r}")
    info = machine()
    started = time.monotonic()
    with Sshd() as sshd:
        bench = Bench(sshd, plan, setups)
        for name in figures:
            progress(f"{name}:")
            FIGURES[name](bench)
    info["loadavg_end"] = os.getloadavg()
    info["seconds"] = round(time.monotonic() - started, 1)
    summary = {name: summarise(bench.raw[name]) for name in setups}
    for name in setups:
        many = summary[name].get("many")
        if many is not None and "failed" not in many:
            many["count"] = plan.many_count
    goals = targets(summary)
    text = (
        f"paramiko {info['paramiko']}, Python {info['python']}, "
        f"{info['cpu']} x{info['cores']}, kernel {info['kernel']}, "
        f"{info['openssh']}; {plan.size // MiB} MiB transfers; "
        f"run took {info['seconds']:.0f} s{' (--quick)' if plan.quick else ''}\n"
        + table(summary, plan)
        + "\n"
        + targets_text(goals)
    )
    print(text)
    out = args.json or str(
        Path(tempfile.gettempdir()) / "proxyfix-bench-quick.json"
        if plan.quick
        else HERE / "latest.json"
    )
    Path(out).write_text(
        json.dumps(
            {
                "machine": info,
                "plan": vars(plan),
                "summary": summary,
                "targets": goals,
                "raw": bench.raw,
                "table": text,
            },
            indent=1,
        )
        + "\n"
    )
    progress(f"wrote {out}")


if __name__ == "__main__":
    main()
