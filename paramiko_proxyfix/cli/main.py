"""``python -m paramiko_proxyfix demo|check|ps|run``: argument parsing and exits.

Each command lives in a module of its own; this one turns bad input into a
message and an exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import paramiko

from .. import _patch
from .._version import __version__

__all__ = ["main"]

PROG = "python -m paramiko_proxyfix"


def version_line() -> str:
    """One line for bug reports: this package's, paramiko's and Python's versions."""
    python = ".".join(str(n) for n in sys.version_info[:3])
    return (
        f"paramiko-proxyfix {__version__} "
        f"(paramiko {paramiko.__version__}, Python {python})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Make paramiko's ProxyCommand safe: see the incident, check "
        "the fix, find stray proxies, run programs with the fix.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_line(),
        help="print the versions of this package, paramiko and Python, and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="show the incident without the fix and with it (~10 s)"
    )
    demo.add_argument("--json", action="store_true", help="print JSON")
    check = sub.add_parser(
        "check",
        help="exit 0 only if the fix is installed and works with this paramiko",
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    ps = sub.add_parser("ps", help="list proxy processes (ssh -W ...) on this host")
    ps.add_argument("--orphans", action="store_true", help="only orphaned ones")
    ps.add_argument(
        "--kill-orphans",
        action="store_true",
        help="terminate orphaned proxies (SIGTERM, then SIGKILL); asks first",
    )
    ps.add_argument("--yes", action="store_true", help="do not ask before killing")
    ps.add_argument(
        "--match",
        action="append",
        metavar="REGEX",
        help="also count processes whose command line matches (repeatable)",
    )
    ps.add_argument(
        "--proc",
        default="/proc",
        metavar="DIR",
        help="/proc to list from (killing needs this pid namespace's own /proc)",
    )
    ps.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser(
        "run",
        help="run a Python program with the fix: run -m MODULE | ./SCRIPT | "
        "-- PROGRAM (never one in the current directory by name)",
        add_help=False,
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import render, run_demo

    if not args.json:
        print("Running the incident twice, without and with the fix (~10 s)...")
        sys.stdout.flush()
    report = run_demo()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1


def _check(args: argparse.Namespace) -> int:
    from .check import render, run_check

    report = run_check()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["ok"] else 1


def _confirm(question: str) -> bool:
    """Ask on stderr; no answer (no stdin, EOF) means no."""
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):
        answer = ""
    if not answer.endswith("\n"):
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _ps(args: argparse.Namespace) -> int:
    from ..redact import printable
    from .ps import ProcUnavailable, as_json, find_proxies, kill, notes, render

    try:
        everything = find_proxies(args.proc, args.match)
    except ProcUnavailable as exc:
        print(f"{PROG} ps: {exc}", file=sys.stderr)
        return 2
    narrowed = args.orphans or args.kill_orphans
    proxies = (
        [p for p in everything if p.state == "orphaned"] if narrowed else everything
    )
    # Left out of the orphans, never killed: say why, as the full table does.
    unknown = [p for p in everything if p.state == "unknown"] if narrowed else []
    table = render(proxies, "no orphaned proxies found" if narrowed else None)
    if unknown:
        table += f"\n\n{len(unknown)} proxies of unknown state, left alone:\n"
        table += "\n".join(notes(unknown))
    if not args.kill_orphans:
        print(json.dumps(as_json(proxies), indent=2) if args.json else table)
        return 0
    if not args.json:
        print(table)
    outcome: dict[int, str] = {}
    refused = False
    if proxies:
        pids = " ".join(str(p.pid) for p in proxies)
        question = f"Terminate {len(proxies)} orphaned proxies ({pids})? [y/N] "
        if args.yes or _confirm(question):
            outcome = kill(proxies, args.proc)
        else:
            refused = True
    if args.json:
        report = {
            "proxies": as_json(proxies),
            "killed": outcome,
            "confirmed": not refused,
            "unknown": as_json(unknown),
        }
        print(json.dumps(report, indent=2))
    else:
        for pid, what in outcome.items():
            print(f"{pid}: {printable(what)}")
    if refused:
        print(
            "Nothing was killed (no confirmation; --yes skips the question).",
            file=sys.stderr,
        )
        return 1
    good = ("terminated (SIGTERM)", "killed (SIGKILL)", "already gone")
    return 0 if all(v in good for v in outcome.values()) else 1


def _run(args: list[str]) -> Any:
    from .run import USAGE, UsageError, run

    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        return run(args, _patch.install)
    except UsageError as exc:
        print(f"{PROG} run: {exc}\n{USAGE}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> Any:
    """Run one command; return the exit status (for ``run``: the program's)."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    if args_list[:1] == ["run"]:
        return _run(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handlers = {"demo": _demo, "check": _check, "ps": _ps}
    try:
        status = handlers[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (``| head``): stop quietly, and keep Python from
        # failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
