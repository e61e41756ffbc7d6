"""``run``: start a Python program in this interpreter with the fix installed.

Adopting the fix then needs no code change, only a different command line::

    python -m paramiko_proxyfix run -m celery -A proj worker
    python -m paramiko_proxyfix run deploy.py --env prod
    python -m paramiko_proxyfix run -- fab -H web1 deploy

The program sees the ``sys.argv`` and ``sys.path[0]`` it would have seen had
it been started directly.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import shutil
import sys
from importlib.metadata import entry_points
from typing import Any, Callable

__all__ = ["UsageError", "parse", "run"]

USAGE = (
    "usage: python -m paramiko_proxyfix run -m MODULE [ARGS...]\n"
    "       python -m paramiko_proxyfix run SCRIPT.py [ARGS...]\n"
    "       python -m paramiko_proxyfix run -- PROGRAM [ARGS...]"
)


class UsageError(Exception):
    """The command line names no runnable program."""


def parse(args: list[str]) -> tuple[str, str, list[str]]:
    """``(form, target, program args)``, form being module, script or program."""
    if not args:
        raise UsageError("run needs a program: a module (-m), a script or a command")
    first, rest = args[0], args[1:]
    if first == "-m":
        if not rest:
            raise UsageError("-m needs a module name")
        return "module", rest[0], rest[1:]
    if first == "--":
        if not rest:
            raise UsageError("-- needs a program name")
        first, rest = rest[0], rest[1:]
    elif first.startswith("-"):
        raise UsageError(f"unknown option {first!r} for run")
    if os.path.isfile(first):
        return "script", first, rest
    if first.endswith(".py"):
        raise UsageError(f"no such script: {first}")
    return "program", first, rest


def _console_script(name: str) -> Callable[[], Any] | None:
    """The function an installed console script ``name`` calls, if any."""
    if sys.version_info >= (3, 10):
        found = list(entry_points(group="console_scripts", name=name))
    else:  # 3.9: a dict of groups, no selection
        scripts = entry_points().get("console_scripts", [])
        found = [ep for ep in scripts if ep.name == name]
    for ep in found:
        func: Callable[[], Any] = ep.load()
        return func
    return None


def _python_script_on_path(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UsageError(f"no such program: {name} (not a console script, not on PATH)")
    try:
        with open(path, "rb") as f:
            first_line = f.readline(256)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if not (first_line.startswith(b"#!") and b"python" in first_line):
        raise UsageError(
            f"{path} is not a Python program; run can only start Python "
            "programs, in this interpreter"
        )
    return path


def run(args: list[str], install: Callable[[], bool]) -> Any:
    """Install the fix, then run the program; return what it returned.

    A program's own ``SystemExit`` and exceptions pass through unchanged.
    """
    form, target, rest = parse(args)
    if form == "module" and importlib.util.find_spec(target) is None:
        raise UsageError(f"no module named {target!r}")
    program: Callable[[], Any] | None = None
    path = target
    if form == "program":
        program = _console_script(target)
        path = shutil.which(target) or target
        if program is None:
            path = _python_script_on_path(target)
    # Even when the fix is off (rollback) or unsupported, the program runs:
    # install() has said why on the log or as a warning.
    install()
    sys.argv = [path, *rest]
    if form == "module":
        # sys.argv[0] becomes the module's file, as with ``python -m``.
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        return None
    # Python puts a script's own directory first on the path.
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    if program is not None:
        return program()
    runpy.run_path(path, run_name="__main__")
    return None
