"""Write patches/ from this package's one source of the fix.

The fix is written as paramiko's own code in ``paramiko_proxyfix/upstream/``
(``proxy.py``, the exceptions for ``ssh_exception.py``) and its test as
paramiko's own ``tests/upstream/test_proxy.py``. Each
``patches/paramiko-X.Y.Z.patch`` edits that release's files, and nothing else:

- ``paramiko/proxy.py``: the release's license comment, then our ``proxy.py``
  from its first ``import`` on, the relative import of the new exceptions
  turned into paramiko's import;
- ``paramiko/ssh_exception.py``: ``import signal``, and our exception classes
  after ``class ProxyCommandFailure``;
- ``paramiko/__init__.py``: ``ProxyCommandClosed`` and ``ProxyCommandExited``
  exported beside ``ProxyCommandFailure`` (and in ``__all__`` where there is
  one);
- ``tests/test_proxy.py``: our ``tests/upstream/test_proxy.py``.

No vendored package, nothing patched at import, no packaging change.
Pristine sources come from the release's sdist on PyPI (``pip download``,
cached). ``--upstream`` also writes ``patches/upstream/``: the same change as
a ``git format-patch`` series against paramiko's repository at
:data:`UPSTREAM_COMMIT` (read from a local mirror, ``$PARAMIKO_MIRROR``), with
a changelog entry.

    python tools/make_patches.py                # rewrite the release patches
    python tools/make_patches.py --upstream     # ... and patches/upstream/
    python tools/make_patches.py --check [--upstream]  # exit 1 if stale
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "paramiko_proxyfix"
SOURCES = PACKAGE / "upstream"
TEST_SOURCE = REPO / "tests" / "upstream" / "test_proxy.py"
PATCHES = REPO / "patches"
SERIES = PATCHES / "upstream"
#: The release lines the patches are made for (the newest of each line).
VERSIONS = ("2.12.0", "3.5.1", "4.0.0", "5.1.0")
#: The files a patch changes, in the order the patch lists them.
PROXY, EXCEPTIONS, INIT, TEST = (
    "paramiko/proxy.py",
    "paramiko/ssh_exception.py",
    "paramiko/__init__.py",
    "tests/test_proxy.py",
)
CHANGELOG = "sites/www/changelog.rst"
#: The exceptions the fix adds, beside ProxyCommandFailure.
NEW_NAMES = ("ProxyCommandClosed", "ProxyCommandExited")
#: Where the series of patches/upstream/ starts from.
UPSTREAM_COMMIT = "8697158113a3eab25ed1d1d541ebe2cad10169a7"
DEFAULT_MIRROR = "/work/.mirror/paramiko+paramiko/repo"
#: Who and when the series' commits say, so that it is a function of its
#: inputs only.
SERIES_AUTHOR = ("paramiko-proxyfix", "paramiko-proxyfix@users.noreply.github.com")
SERIES_DATE = "2026-12-04T12:00:00+00:00"

_RELATIVE = "from .ssh_exception import ProxyCommandClosed, ProxyCommandExited\n"
_ABSOLUTE = "from paramiko.ssh_exception import ProxyCommandFailure\n"
_JOINED = (
    "from paramiko.ssh_exception import (\n"
    "    ProxyCommandClosed,\n"
    "    ProxyCommandExited,\n"
    "    ProxyCommandFailure,\n"
    ")\n"
)


class PatchError(Exception):
    """The package's source or a pristine file is not shaped as expected."""


def sdist_cache() -> Path:
    default = Path.home() / ".cache" / "paramiko-proxyfix" / "sdists"
    return Path(os.environ.get("PARAMIKO_PROXYFIX_SDISTS", default))


def fetch_sdist(version: str, cache: Path | None = None) -> Path:
    """The release's sdist, downloaded with pip into the cache once."""
    cache = cache or sdist_cache()
    path = cache / f"paramiko-{version}.tar.gz"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", ":all:", "--dest", str(cache), f"paramiko=={version}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not path.exists():
        raise PatchError(
            f"could not download the sdist of paramiko {version} with pip:\n"
            + (done.stderr.strip() or done.stdout.strip())
        )
    return path


def read_sdist(
    version: str, names: list[str] | tuple[str, ...], cache: Path | None = None
) -> dict[str, str]:
    """Files from the sdist by their path in the source tree."""
    out = {}
    with tarfile.open(fetch_sdist(version, cache)) as tar:
        for name in names:
            try:
                member = tar.extractfile(f"paramiko-{version}/{name}")
            except KeyError:
                member = None
            if member is None:
                raise PatchError(f"paramiko {version}'s sdist has no {name}")
            out[name] = member.read().decode("utf-8")
    return out


def package_version() -> str:
    """paramiko_proxyfix's version, read without importing the package."""
    tree = ast.parse((PACKAGE / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise PatchError("paramiko_proxyfix/_version.py has no __version__")


# -- our side ------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _first_import(lines: list[str], name: str) -> int:
    """Index of the first line that starts an import; all before must be
    comments or blank."""
    for n, line in enumerate(lines):
        if line.startswith(("import ", "from ")):
            return n
        if line.strip() and not line.startswith("#"):
            raise PatchError(f"{name}: {line.strip()!r} comes before the first import")
    raise PatchError(f"{name} has no import")


def our_proxy(source: str | None = None) -> str:
    """upstream/proxy.py from its first import on, importing as paramiko does."""
    text = (SOURCES / "proxy.py").read_text() if source is None else source
    lines = _lines(text)
    body = "".join(lines[_first_import(lines, "upstream/proxy.py") :])
    if body.count(_ABSOLUTE) != 1 or body.count(_RELATIVE) != 1:
        raise PatchError(
            "upstream/proxy.py must import ProxyCommandFailure from "
            "paramiko.ssh_exception and the new exceptions from .ssh_exception, "
            "once each, as `" + _ABSOLUTE.strip() + "` and `" + _RELATIVE.strip() + "`"
        )
    lines = _lines(body.replace(_ABSOLUTE, _JOINED))
    at = lines.index(_RELATIVE)
    # The line goes, and the blank line that set it apart, if any.
    gone = 2 if at and lines[at - 1] == "\n" and lines[at + 1 : at + 2] == ["\n"] else 1
    body = "".join(lines[: at - gone + 1] + lines[at + 1 :])
    _no_relative_imports(body, "upstream/proxy.py")
    return body


def our_exceptions(source: str | None = None) -> str:
    """The classes of upstream/ssh_exception.py: everything after its imports."""
    path = SOURCES / "ssh_exception.py"
    text = path.read_text() if source is None else source
    tree = ast.parse(text)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    names = sorted(c.name for c in classes)
    if not imports or names != sorted(NEW_NAMES):
        raise PatchError(
            f"upstream/ssh_exception.py must import, then define {NEW_NAMES} "
            f"(it defines {names})"
        )
    last = max(n.end_lineno or n.lineno for n in imports)
    if any(n.lineno < last for n in tree.body if n not in imports):
        raise PatchError("upstream/ssh_exception.py has code among its imports")
    rest = "".join(_lines(text)[last:]).lstrip("\n")
    return rest


def our_test() -> str:
    text = TEST_SOURCE.read_text()
    _no_relative_imports(text, "tests/upstream/test_proxy.py")
    if "paramiko_proxyfix" in text:
        raise PatchError("tests/upstream/test_proxy.py names paramiko_proxyfix")
    return text


def _no_relative_imports(text: str, name: str) -> None:
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise PatchError(f"{name}: a relative import is left in paramiko's copy")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
            if any(m.startswith("paramiko_proxyfix") for m in mods):
                raise PatchError(f"{name} imports paramiko_proxyfix")


# -- the edits of paramiko's files ---------------------------------------------


def proxy_module(pristine: str, ours: str | None = None) -> str:
    """paramiko/proxy.py: the release's license comment, then our module."""
    lines = _lines(pristine)
    start = _first_import(lines, PROXY)
    if not any(line.startswith("#") for line in lines[:start]):
        raise PatchError(f"{PROXY} has no license comment before its imports")
    if "class ProxyCommand(" not in pristine:
        raise PatchError(f"{PROXY} has no class ProxyCommand")
    return "".join(lines[:start]) + (our_proxy() if ours is None else ours)


def exceptions_module(pristine: str, classes: str | None = None) -> str:
    """paramiko/ssh_exception.py with ``import signal`` and the new classes
    right after ProxyCommandFailure."""
    classes = our_exceptions() if classes is None else classes
    lines = _lines(pristine)
    tree = ast.parse(pristine)
    imports = [n for n in tree.body if isinstance(n, ast.Import)]
    if any(a.name == "signal" for n in imports for a in n.names):
        raise PatchError(f"{EXCEPTIONS} already imports signal")
    found = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if any(c.name in NEW_NAMES for c in found):
        raise PatchError(f"{EXCEPTIONS} already defines one of {NEW_NAMES}")
    failure = [c for c in found if c.name == "ProxyCommandFailure"]
    socket_line = [
        n.lineno for n in imports if lines[n.lineno - 1] == "import socket\n"
    ]
    if len(failure) != 1 or len(socket_line) != 1:
        raise PatchError(
            f"{EXCEPTIONS}: expected one `import socket` line and one "
            "class ProxyCommandFailure"
        )
    end = failure[0].end_lineno or failure[0].lineno
    if lines[end : end + 2] != ["\n", "\n"]:
        raise PatchError(
            f"{EXCEPTIONS}: class ProxyCommandFailure is not followed by two "
            "blank lines"
        )
    at = socket_line[0] - 1
    new = lines[:at] + ["import signal\n"] + lines[at:end] + ["\n", "\n"]
    return "".join(new) + classes + "".join(lines[end:])


def _insert_before(lines: list[str], start: int, wanted: str, new: list[str]) -> int:
    """Insert ``new`` before ``wanted`` within the bracketed block opening at
    ``start``; -1 if the block lacks it."""
    for n in range(start + 1, len(lines)):
        if lines[n].startswith((")", "]")):
            return -1
        if lines[n] == wanted:
            lines[n:n] = new
            return n
    return -1


def init_module(pristine: str) -> str:
    """paramiko/__init__.py exporting the new exceptions beside
    ProxyCommandFailure."""
    lines = _lines(pristine)
    if any(name in pristine for name in NEW_NAMES):
        raise PatchError(f"{INIT} already names one of {NEW_NAMES}")
    opens = [
        n
        for n, line in enumerate(lines)
        if line == "from paramiko.ssh_exception import (\n"
    ]
    if len(opens) != 1 or (
        _insert_before(
            lines,
            opens[0],
            "    ProxyCommandFailure,\n",
            [f"    {name},\n" for name in NEW_NAMES],
        )
        < 0
    ):
        raise PatchError(
            f"{INIT}: expected one `from paramiko.ssh_exception import (` block "
            "naming ProxyCommandFailure on a line of its own"
        )
    alls = [n for n, line in enumerate(lines) if line.startswith("__all__")]
    if alls:
        if len(alls) != 1 or lines[alls[0]] != "__all__ = [\n":
            raise PatchError(f"{INIT}: expected one `__all__ = [` list")
        new = [f'    "{name}",\n' for name in NEW_NAMES]
        if _insert_before(lines, alls[0], '    "ProxyCommandFailure",\n', new) < 0:
            raise PatchError(f"{INIT}: __all__ does not list ProxyCommandFailure")
    return "".join(lines)


def changelog(pristine: str) -> str:
    """sites/www/changelog.rst with our entry on top of the list."""
    lines = _lines(pristine)
    first = next((n for n, line in enumerate(lines) if line.startswith("- :")), None)
    if first is None or first > 10:
        raise PatchError(f"{CHANGELOG}: no list of entries under the title")
    entry = (SERIES / "changelog-entry.rst").read_text()
    if not entry.startswith("- :bug:`") or not entry.endswith("\n"):
        raise PatchError("patches/upstream/changelog-entry.rst is not a :bug: entry")
    return "".join(lines[:first]) + entry + "".join(lines[first:])


def edited(pristine: dict[str, str]) -> dict[str, str]:
    """The new text of each file the fix changes, from the pristine ones."""
    return {
        PROXY: proxy_module(pristine[PROXY]),
        EXCEPTIONS: exceptions_module(pristine[EXCEPTIONS]),
        INIT: init_module(pristine[INIT]),
        TEST: our_test(),
    }


# -- the release patches -------------------------------------------------------


def _diff(name: str, old: str, new: str) -> str:
    for text in (old, new):
        if text and not text.endswith("\n"):
            raise PatchError(f"{name} does not end with a newline")
    return "".join(
        difflib.unified_diff(
            _lines(old), _lines(new), fromfile=f"a/{name}", tofile=f"b/{name}", n=3
        )
    )


def make_patch(version: str, cache: Path | None = None) -> str:
    """The whole patch for one paramiko release, as text."""
    pristine = read_sdist(version, (PROXY, EXCEPTIONS, INIT, TEST), cache)
    new = edited(pristine)
    parts = [
        f"paramiko {version}: ProxyCommand ends the connection when its command "
        "dies, and close()\n",
        "ends, reaps and closes it (paramiko-proxyfix's fix, in paramiko's own "
        "files).\n",
        "Generated by tools/make_patches.py; do not edit. Apply with `patch -p1` "
        "at the\n",
        "root of the release's source distribution.\n",
        "\n",
    ]
    parts += [_diff(name, pristine[name], new[name]) for name in new]
    return "".join(parts)


def changed_lines(patch: str, outside: str = "tests/") -> int:
    """Lines added plus removed by ``patch`` in files not under ``outside``
    (as diffstat counts them)."""
    count, skip = 0, False
    for line in patch.splitlines():
        if line.startswith("+++ "):
            path = line[4:].split("\t")[0]
            path = path[2:] if path.startswith("b/") else path
            skip = path.startswith(outside)
        elif line.startswith("--- ") or line.startswith("diff "):
            continue
        elif line.startswith(("+", "-")) and not skip:
            count += 1
    return count


# -- the upstream series -------------------------------------------------------

#: (subject, body, files) of each commit of the series.
COMMITS = (
    (
        "Add ProxyCommandExited and ProxyCommandClosed",
        "Both are ProxyCommandFailure subclasses, so existing handlers keep\n"
        "catching them. ProxyCommandExited carries the proxy command's exit\n"
        "status (negative for a signal, with the signal's name) and the end of\n"
        "its stderr, and is an EOFError as well; ProxyCommandClosed is raised\n"
        "when a closed ProxyCommand is used again.\n",
        (EXCEPTIONS, INIT),
    ),
    (
        "ProxyCommand: end the connection when the command dies; reap it on close",
        "recv() no longer spins at 100% CPU on a command that died: it waits\n"
        "for output with poll() (any descriptor number, unlike select()),\n"
        "returns what is there as soon as anything is, and at end of output\n"
        "returns b'' (status 0) or raises ProxyCommandExited with the status and\n"
        "stderr. send() takes what the pipe takes and honours the timeout.\n"
        "close() closes stdin, sends SIGTERM, then SIGKILL after close_timeout,\n"
        "reaps the command and closes its three pipes; it is safe to repeat, to\n"
        "call after the command exited (no ProcessLookupError) and to call from\n"
        "another thread, and in a forked child it leaves the parent's command\n"
        "alone.\n"
        "\n"
        "Fixes #1713 and #1715, and the spin of #1277; covers the cases of\n"
        "#1909 (descriptors above 1023) and #2261 (ProcessLookupError).\n",
        (PROXY, TEST, CHANGELOG),
    ),
)


def mirror_path() -> Path:
    return Path(os.environ.get("PARAMIKO_MIRROR", DEFAULT_MIRROR))


def _git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise PatchError(f"git {' '.join(args)} failed:\n{done.stderr.strip()}")
    return done.stdout


def make_series(mirror: Path | None = None) -> dict[str, str]:
    """patches/upstream/: file name -> text of the ``git format-patch`` series
    against :data:`UPSTREAM_COMMIT` of the mirror."""
    mirror = mirror or mirror_path()
    if not mirror.exists():
        raise PatchError(
            f"no paramiko mirror at {mirror} (set PARAMIKO_MIRROR to a clone of "
            "paramiko/paramiko)"
        )
    name, email = SERIES_AUTHOR
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": SERIES_DATE,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_COMMITTER_DATE": SERIES_DATE,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "paramiko"
        _git("clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(work),
             cwd=Path(tmp), env=env)  # fmt: skip
        _git("checkout", "--quiet", "--detach", UPSTREAM_COMMIT, cwd=work, env=env)
        paths = (PROXY, EXCEPTIONS, INIT, TEST, CHANGELOG)
        pristine = {p: (work / p).read_text() for p in paths}
        new = edited(pristine)
        new[CHANGELOG] = changelog(pristine[CHANGELOG])
        for subject, body, files in COMMITS:
            for path in files:
                (work / path).write_text(new[path])
            _git("add", *files, cwd=work, env=env)
            _git("commit", "--quiet", "-m", subject + "\n\n" + body, cwd=work, env=env)
        out = Path(tmp) / "out"
        _git("format-patch", "--quiet", "--zero-commit", "--full-index",
             "--no-signature", "--base", UPSTREAM_COMMIT, "-o", str(out),
             f"{UPSTREAM_COMMIT}..HEAD", cwd=work, env=env)  # fmt: skip
        return {p.name: p.read_text() for p in sorted(out.iterdir())}


def series_files(series: dict[str, str]) -> dict[str, tuple[str, str]]:
    """path -> (blob id before, blob id after) over the whole series, from its
    ``index`` lines (``--full-index``)."""
    found: dict[str, tuple[str, str]] = {}
    for name in sorted(series):
        path = None
        for line in series[name].splitlines():
            match = re.match(r"diff --git a/(\S+) b/\S+$", line)
            if match:
                path = match.group(1)
                continue
            match = re.match(r"index ([0-9a-f]{40})\.\.([0-9a-f]{40})", line)
            if match and path is not None:
                before = found.get(path, (match.group(1), ""))[0]
                found[path] = (before, match.group(2))
                path = None
    return found


# -- main ----------------------------------------------------------------------


def _compare(path: Path, text: str, stale: list[str]) -> None:
    if not path.exists() or path.read_text() != text:
        stale.append(str(path.relative_to(REPO)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument(
        "--upstream",
        action="store_true",
        help="also the series of patches/upstream/ (needs the mirror)",
    )
    parser.add_argument("versions", nargs="*", default=list(VERSIONS))
    args = parser.parse_args(argv)
    stale: list[str] = []
    try:
        for version in args.versions:
            text = make_patch(version)
            path = PATCHES / f"paramiko-{version}.patch"
            if args.check:
                _compare(path, text, stale)
                continue
            PATCHES.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
        if args.upstream:
            series = make_series()
            old = sorted(SERIES.glob("*.patch"))
            if args.check:
                for name, text in series.items():
                    _compare(SERIES / name, text, stale)
                stale += [str(p.relative_to(REPO)) for p in old if p.name not in series]
            else:
                for path in old:
                    path.unlink()
                for name, text in series.items():
                    (SERIES / name).write_text(text)
                    print(f"wrote {(SERIES / name).relative_to(REPO)}")
    except PatchError as exc:
        print(f"make_patches: {exc}", file=sys.stderr)
        return 2
    if stale:
        print(
            "stale: "
            + ", ".join(stale)
            + "; run python tools/make_patches.py"
            + (" --upstream" if args.upstream else ""),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    if shutil.which("git") is None and "--upstream" in sys.argv:
        sys.exit("make_patches: --upstream needs git")
    sys.exit(main())
