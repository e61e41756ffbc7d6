"""Our Python, with paramiko and its requirements, for an unprivileged user.

A test running as root that wants to run code as another user needs a Python
that user may run, of the version and with the packages under test. Ours
usually is not one: pyenv's interpreters live under /root (mode 0700), and
tox's envs under .tox (0700 too). So the user gets a world-readable copy of
exactly what it needs, made once and cached:

- the running interpreter's installation (``sys.base_prefix``): its
  ``bin/python3.X``, its shared libpython if any, and ``lib/python3.X``
  without ``site-packages``, ``test`` and other big unneeded parts;
- the distributions it imports (paramiko, paramiko-proxyfix's requirements
  and theirs, found with importlib.metadata in the running environment):
  their files as installed, compiled extensions included, which then work
  with the copied interpreter (the same build);
- paramiko_proxyfix itself is not copied: the repository goes first on
  PYTHONPATH (checked readable by others), so the code under test is used.

The copied interpreter runs with LD_LIBRARY_PATH at its own libpython (the
binary's RUNPATH names the original one) and PYTHONPATH at the repository
and at one directory per distribution.

The cache lives under /var/tmp, a directory everyone may write to, and we
write there as root: the cache directory is created (never reused unless it
is a real directory of ours that no one else may write to; otherwise a
private one is made for this run), and everything below it is ours alone.
Entries are built in a private temporary directory and renamed into place,
so a half-built entry is never seen, and concurrent runs do not clash. One
entry per interpreter (``python-*``, about 50-70 MB) and one per installed
distribution (``dist-*``; cryptography is 20 MB), keyed by what they were
copied from, so the tox cells of one Python share what they have in common
(the interpreter, cryptography, bcrypt, pynacl, cffi).
Entries unused for PRUNE_DAYS are removed when a new one is built.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO_ROOT

CACHE_ROOT = Path("/var/tmp/paramiko-proxyfix-userpy")
#: Bump when what goes into an entry changes.
_FORMAT = 1
#: Distributions the code run as the user imports (with their requirements).
ROOT_DISTS = ("paramiko", "paramiko-proxyfix")
#: Parts of lib/python3.X nobody needs to run paramiko: skipped (about 75%).
_STDLIB_SKIP = {
    "site-packages",
    "dist-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
}
#: Optimised bytecode: only plain .pyc files are read without -O.
_SKIP_FILES = re.compile(r".*\.opt-[12]\.pyc$")
#: Unfinished builds older than this are left-overs of a killed run.
_STALE_BUILD_SECONDS = 3600
#: Entries not used for this long are removed when another is built.
PRUNE_DAYS = 30


class UserPythonError(RuntimeError):
    """No copy could be made, or the user cannot run it: with the reason."""


@dataclass(frozen=True)
class UserPython:
    """How to run our Python, with our packages, as the user."""

    python: str
    env: dict[str, str]
    seconds: float  # what building (or finding) the copy took
    built: bool  # whether anything was copied this time


# -- a directory only root may write to -------------------------------------


def _safe_dir(path: Path) -> bool:
    """Whether ``path`` is a real directory (no symlink) of ours, closed to
    writers other than us."""
    st = os.lstat(path)
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _safe_ancestors(path: Path) -> bool:
    """Whether no one but root may swap ``path`` for something else: each
    ancestor is root's and not writable by others, or sticky (as /var/tmp)."""
    for parent in path.parents:
        st = os.lstat(parent)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            return False
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
            st.st_mode & stat.S_ISVTX
        ):
            return False
    return True


def _cache_root() -> Path:
    """CACHE_ROOT, made if missing; a private directory (removed at exit) if
    it is unsafe: someone else's, a symlink, writable by others."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(CACHE_ROOT, 0o755)
    if _safe_ancestors(CACHE_ROOT) and _safe_dir(CACHE_ROOT):
        os.chmod(CACHE_ROOT, 0o755)  # our umask may have taken bits away
        return CACHE_ROOT
    private = Path(tempfile.mkdtemp(prefix="paramiko-proxyfix-userpy-"))
    os.chmod(private, 0o755)
    atexit.register(shutil.rmtree, private, True)
    print(
        f"userpy: {CACHE_ROOT} is not a directory only root may write to;"
        f" using {private} for this run",
        file=sys.stderr,
    )
    return private


# -- building an entry -------------------------------------------------------


def _open_up(top: Path) -> None:
    """Directories 0755, files 0755 if executable else 0644; no symlinks."""
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise UserPythonError(f"not a regular file in the copy: {path}")
            os.chmod(path, 0o755 if st.st_mode & 0o111 else 0o644)
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise UserPythonError(f"a symlink in the copy: {dirpath}/{name}")


def _entry(root: Path, name: str, fill: Callable[[Path], None]) -> tuple[Path, bool]:
    """``root/name``, built by ``fill(directory)`` unless already there."""
    final = root / name
    if final.is_dir() and _safe_dir(final):
        os.utime(final)  # used: not to be pruned
        return final, False
    build = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=root))
    try:
        fill(build)
        _open_up(build)
        try:
            os.rename(build, final)
        except OSError:
            if not (final.is_dir() and _safe_dir(final)):
                raise
            # Another run built it meanwhile: use theirs.
            shutil.rmtree(build)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return final, True


def _prune(root: Path) -> None:
    """Remove entries unused for PRUNE_DAYS and builds a killed run left."""
    now = time.time()
    for old in root.iterdir():
        if old.name.startswith(".build-"):
            max_age = _STALE_BUILD_SECONDS
        elif old.name.startswith(("python-", "dist-")):
            max_age = PRUNE_DAYS * 86400
        else:
            continue
        with contextlib.suppress(OSError):
            if now - os.lstat(old).st_mtime > max_age:
                shutil.rmtree(old)


def _copy_file(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)  # keeps mtimes: the copied .pyc files stay valid


def _interpreter() -> tuple[str, str, list[str]]:
    """(its bin/python3.X, its lib/python3.X, the shared libraries it needs)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    binary = os.path.join(sys.base_prefix, "bin", f"python{version}")
    stdlib = sysconfig.get_paths()["stdlib"]
    libs = []
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR")
        soname = sysconfig.get_config_var("INSTSONAME")
        libs.append(os.path.join(libdir, soname))
    for path in (binary, stdlib, *libs):
        if not os.path.exists(path):
            raise UserPythonError(f"cannot find {path} of {sys.base_prefix}")
    if Path(stdlib) != Path(sys.base_prefix, "lib", f"python{version}"):
        raise UserPythonError(f"unexpected layout: the standard library is {stdlib}")
    return binary, stdlib, libs


def _copy_interpreter(dst: Path) -> None:
    binary, stdlib, libs = _interpreter()
    _copy_file(binary, dst / "bin" / os.path.basename(binary))
    for lib in libs:
        _copy_file(lib, dst / "lib" / os.path.basename(lib))

    def skip(directory: str, names: list[str]) -> set[str]:
        top = os.path.samefile(directory, stdlib)
        return {
            name
            for name in names
            if (top and (name in _STDLIB_SKIP or name.startswith("config-")))
            or _SKIP_FILES.match(name)
        }

    shutil.copytree(stdlib, dst / "lib" / os.path.basename(stdlib), ignore=skip)


def _canonical(name: str) -> str:
    """A distribution's name as PEP 503 normalises it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: importlib.metadata.Distribution) -> Iterable[str]:
    """Names of what ``dist`` requires here (not its extras)."""
    try:
        from packaging.markers import Marker
    except ImportError:  # then whatever is installed will do
        Marker = None  # type: ignore[assignment,misc]
    for req in dist.requires or ():
        name, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        if marker.strip() and Marker is not None and not Marker(marker).evaluate():
            continue
        found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", name)
        if found:
            yield found.group(1)


def _closure(roots: Sequence[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``roots`` need, theirs included."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # what is really needed, the probe finds missing
        seen[name] = dist
        todo.extend(_requirements(dist))
    # paramiko_proxyfix comes from the repository, not from the copy.
    seen.pop("paramiko-proxyfix", None)
    return [seen[name] for name in sorted(seen)]


def _dist_files(dist: importlib.metadata.Distribution) -> list[tuple[str, str]]:
    """(source, path relative to its site directory) of each file ``dist``
    installed there (not its scripts)."""
    if dist.files is None:
        raise UserPythonError(f"{dist.metadata['Name']} lists no files (no RECORD)")
    site = Path(dist.locate_file("")).resolve()
    out = []
    for file in dist.files:
        src = Path(dist.locate_file(file)).resolve()
        try:
            rel = src.relative_to(site)
        except ValueError:
            continue  # bin/ scripts and the like
        if src.is_file() and not _SKIP_FILES.match(src.name):
            out.append((str(src), str(rel)))
    return out


def _copy_dist(dist: importlib.metadata.Distribution, dst: Path) -> None:
    for src, rel in _dist_files(dist):
        _copy_file(src, dst / rel)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _interpreter_key() -> str:
    binary, _, libs = _interpreter()
    stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in (binary, *libs)]
    return _digest(_FORMAT, sys.version, sys.base_prefix, stats)


def _dist_entry_name(dist: importlib.metadata.Distribution) -> str:
    """dist-3.X-name-version-hash: RECORD holds each file's hash (the .pyc
    files' too), so another build or another Python's files differ."""
    name = _canonical(dist.metadata["Name"])
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    key = _digest(_FORMAT, name, dist.version, dist.read_text("RECORD") or "")
    return f"dist-{version}-{name}-{dist.version}-{key}"


# -- checking the user can run it --------------------------------------------

_PROBE = """
import json, sys
import paramiko, paramiko_proxyfix
print(json.dumps({"version": sys.version, "paramiko": paramiko.__version__,
                  "paramiko_file": paramiko.__file__,
                  "proxyfix_file": paramiko_proxyfix.__file__}))
"""


def _readable_by_others(path: Path) -> bool:
    """Whether anyone may reach ``path`` and read what it holds."""
    for parent in (path, *path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    for dirpath, _dirnames, filenames in os.walk(path):
        if not os.stat(dirpath).st_mode & (stat.S_IROTH | stat.S_IXOTH):
            return False
        for name in filenames:
            if not os.stat(os.path.join(dirpath, name)).st_mode & stat.S_IROTH:
                return False
    return True


@functools.cache
def system_user(name: str) -> int:
    """The uid of the system user ``name``, made (no home, no login shell)
    if missing; making one needs root."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home"]
            + ["--shell", "/usr/sbin/nologin", name],
            check=True,
            timeout=30,
            capture_output=True,
        )
        return pwd.getpwnam(name).pw_uid


def user_python(as_user: tuple[str, ...]) -> UserPython:
    """Our Python and packages, runnable by the user ``as_user`` (a command
    prefix such as ``setpriv --reuid=...``) becomes; checked by running it so.

    Raises UserPythonError (saying why) if that cannot be had.
    """
    import paramiko

    package = REPO_ROOT / "paramiko_proxyfix"
    if not _readable_by_others(package):
        raise UserPythonError(
            f"{package} is not readable by other users: the unprivileged user"
            " imports it from there (run from a checkout others may read)"
        )
    t0 = time.monotonic()
    root = _cache_root()
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    prefix, built = _entry(
        root, f"python-{version}-{_interpreter_key()}", _copy_interpreter
    )
    sites = {}
    for dist in _closure(ROOT_DISTS):
        path, built_dist = _entry(
            root, _dist_entry_name(dist), functools.partial(_copy_dist, dist)
        )
        sites[_canonical(dist.metadata["Name"])] = path
        built = built or built_dist
    if built:  # now that what we use is marked used
        _prune(root)
    seconds = time.monotonic() - t0
    if "paramiko" not in sites:
        raise UserPythonError("paramiko is not installed here")

    python = str(prefix / "bin" / f"python{version}")
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"):
        env.pop(name, None)
    env.update(
        PYTHONPATH=os.pathsep.join(map(str, [REPO_ROOT, *sites.values()])),
        PYTHONNOUSERSITE="1",
        # The copied libpython, not the one the binary's RUNPATH names.
        LD_LIBRARY_PATH=str(prefix / "lib"),
    )
    try:
        probe = subprocess.run(
            [*as_user, python, "-c", _PROBE],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserPythonError(f"running {python} as the user: {exc!r}") from exc
    lines = [line for line in probe.stdout.splitlines() if line.startswith("{")]
    if probe.returncode != 0 or not lines:
        raise UserPythonError(
            f"the user cannot run {python} (exit {probe.returncode}); delete"
            f" {root}/*-{version}-* to have the copies rebuilt:\n{probe.stderr}"
        )
    got = json.loads(lines[-1])
    want = {
        "version": sys.version,
        "paramiko": paramiko.__version__,
        "paramiko_file": str(sites["paramiko"] / "paramiko" / "__init__.py"),
        "proxyfix_file": str(package / "__init__.py"),
    }
    if got != want:
        raise UserPythonError(f"the copy is not ours: got {got}, want {want}")
    return UserPython(python, env, seconds, built)
