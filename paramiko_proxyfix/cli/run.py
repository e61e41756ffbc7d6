"""``run``: start a Python program in this interpreter with the fix installed.

Adopting the fix then needs no code change, only a different command line::

    python -m paramiko_proxyfix run -m celery -A proj worker
    python -m paramiko_proxyfix run deploy.py --env prod
    python -m paramiko_proxyfix run -- fab -H web1 deploy

The program sees the ``sys.argv`` and ``sys.path[0]`` it would have seen had
it been started directly.

What names the program (operators run this as root, often from a directory
other users can write to, so the current directory is never searched for a
program by name):

- ``-m MODULE``: the module, found as ``python -m`` finds it.
- A word with a slash (``./deploy``, ``bin/tool``) or ending in ``.py``
  (``deploy.py``): a script path, as given; the user named the file.
- Any other word (``celery``, ``fab``): a program. First an installed
  console script (entry point) of that name, then a Python script in a PATH
  directory. The current directory is not searched: not for the file, not
  for distributions declaring console scripts, not for the modules an entry
  point imports, and relative or empty PATH entries (``.``, ``bin``, ``::``)
  are skipped. To run ``./celery``, say ``./celery``.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
import sysconfig
from importlib.metadata import entry_points
from typing import Any, Callable

__all__ = ["UsageError", "parse", "run"]

USAGE = (
    "usage: python -m paramiko_proxyfix run -m MODULE [ARGS...]\n"
    "       python -m paramiko_proxyfix run SCRIPT.py|./SCRIPT [ARGS...]\n"
    "       python -m paramiko_proxyfix run [--] PROGRAM [ARGS...]"
)


class UsageError(Exception):
    """The command line names no runnable program."""


def _is_path(word: str) -> bool:
    """Whether ``word`` names a file (a slash, or ``.py``) rather than a program."""
    slash = os.sep in word or bool(os.altsep and os.altsep in word)
    return slash or word.endswith(".py")


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
    if not _is_path(first):
        return "program", first, rest
    if not os.path.isfile(first):
        raise UsageError(f"no such script: {first}")
    return "script", first, rest


def _set_path0(directory: str) -> None:
    """Make ``directory`` what Python puts first on the path for a script.

    It replaces the current directory that ``python -m`` put there; under
    ``python -P`` (safe path) nothing was put there, and nothing is.
    """
    if getattr(sys.flags, "safe_path", False):
        return
    if sys.path:
        sys.path[0] = directory
    else:
        sys.path.insert(0, directory)


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


def _on_path(name: str) -> str | None:
    """The executable ``name`` in PATH's absolute directories.

    A relative or empty entry means a directory relative to wherever this
    runs (the current one, for ``.`` and ``""``): skipped.
    """
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isabs(directory):
            continue
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _python_script(path: str | None, name: str) -> str:
    if path is None:
        hint = f"; to run the file here, say ./{name}" if os.path.exists(name) else ""
        raise UsageError(
            f"no such program: {name} (not a console script, not on PATH{hint})"
        )
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
        # Before looking for it: the current directory that ``python -m``
        # put first on the path must not supply the program or its modules.
        scripts = sysconfig.get_path("scripts")
        _set_path0(scripts)
        found = _on_path(target)
        program = _console_script(target)
        path = _python_script(found, target) if program is None else found or target
        _set_path0(os.path.dirname(found) if found else scripts)
    # Even when the fix is off (rollback) or unsupported, the program runs:
    # install() has said why on the log or as a warning.
    install()
    sys.argv = [path, *rest]
    if form == "module":
        # sys.argv[0] becomes the module's file, as with ``python -m``.
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        return None
    if form == "script":
        # Python puts a script's own directory first on the path.
        _set_path0(os.path.dirname(os.path.abspath(path)))
    if program is not None:
        return program()
    runpy.run_path(path, run_name="__main__")
    return None
