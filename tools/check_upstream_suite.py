"""Run paramiko's own test suite on each release, pristine and patched.

For every target (a release line of patches/, or ``main``: paramiko's
repository at make_patches.UPSTREAM_COMMIT with the series of
patches/upstream/ applied) this builds a venv on a Python where that
release's suite collects, with the release's own test requirements, then
runs the suite twice with the same interpreter: on the pristine tree and on
the tree as the patch leaves it (its ``tests/`` included, so the patched run
has the patch's ``tests/test_proxy.py``). It prints a table of collected /
passed / failed / skipped per target and tree, and exits 1 if a test that
passes on the pristine tree fails (or is missing) on the patched one. Tests
of the replaced ``tests/test_proxy.py`` are counted apart.

    python tools/check_upstream_suite.py                 # the four releases
    python tools/check_upstream_suite.py 5.1.0 main      # some targets
    python tools/check_upstream_suite.py --cache DIR --json out.json

Venvs and trees live under ``--cache`` (default
``~/.cache/paramiko-proxyfix/upstream-suite``); venvs are reused while their
requirements are unchanged. Interpreters are found as ``$PY39`` ...
``$PY313``, else ``~/.pyenv/versions/3.X.*/bin/python3``, else ``python3.X``
on PATH. ``main`` needs the mirror (``$PARAMIKO_MIRROR``).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import make_patches
from build_patched_wheel import BuildError, apply_patch

#: Test requirements shared by the 3.x-and-later suites (their
#: dev-requirements / dependency group, less docs, lint and release tools).
_MODERN = ("pytest", "pytest-relaxed>=2", "pytest-xdist>=3", "icecream>=2.1")


@dataclass(frozen=True)
class Target:
    name: str
    #: "3.X" of the interpreter the suite runs on.
    python: str
    #: What the suite needs besides paramiko's runtime requirements.
    test_deps: tuple[str, ...]
    #: pytest options of the release's own configuration that its sdist lacks.
    pytest_args: tuple[str, ...] = ()


TARGETS = {
    # 2.12's dev-requirements pin pytest 4.4.2 and pytest-relaxed 1.1.5
    # (pytest < 5): 4.6.11 is the last pytest they accept, and it runs on
    # 3.9. cryptography < 42: nearer the releases 2.12 was tested with (its
    # DSA and TripleDES use draws deprecation warnings from newer ones).
    "2.12.0": Target(
        "2.12.0",
        "3.9",
        (
            "pytest==4.6.11",
            "pytest-relaxed==1.1.5",
            "mock==2.0.0",
            "invoke==1.6.0",
            "cryptography<42",
            "pytest-timeout<2",
        ),
        # its repository's pytest.ini, which the sdist does not ship
        ("-p", "no:relaxed"),
    ),
    "3.5.1": Target("3.5.1", "3.11", (*_MODERN, "invoke>=2.0", "pytest-timeout")),
    "4.0.0": Target("4.0.0", "3.12", (*_MODERN, "pytest-timeout")),
    "5.1.0": Target("5.1.0", "3.13", (*_MODERN, "pytest-timeout")),
    "main": Target("main", "3.13", (*_MODERN, "pytest-timeout")),
}
#: Seconds one test may take before pytest-timeout fails it, and the whole run.
TEST_TIMEOUT = 300
RUN_TIMEOUT = 3600
#: The file the patch replaces: its tests are counted apart.
PROXY_TESTS = "tests/test_proxy.py::"


class SuiteError(Exception):
    pass


def find_python(version: str) -> str:
    env = os.environ.get("PY" + version.replace(".", ""))
    if env:
        return env
    found = sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3")),
        key=lambda p: [int(x) for x in Path(p).parents[1].name.split(".")],
    )
    if found:
        return found[-1]
    which = shutil.which(f"python{version}")
    if which:
        return which
    raise SuiteError(f"no Python {version} (set PY{version.replace('.', '')})")


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SuiteError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n"
            + (done.stderr.strip() or done.stdout.strip())[-3000:]
        )
    return done  # type: ignore[no-any-return]


# -- trees ------------------------------------------------------------------------


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def release_trees(version: str, into: Path) -> tuple[Path, Path]:
    """The sdist unpacked twice; the second with patches/paramiko-X.patch."""
    trees = []
    for kind in ("pristine", "patched"):
        where = _fresh(into / kind)
        with tarfile.open(make_patches.fetch_sdist(version)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(where, filter="data")
            else:
                tar.extractall(where)
        trees.append(where / f"paramiko-{version}")
    apply_patch(trees[1], make_patches.PATCHES / f"paramiko-{version}.patch")
    return trees[0], trees[1]


def main_trees(into: Path) -> tuple[Path, Path]:
    """paramiko's repository at UPSTREAM_COMMIT, and with the series applied."""
    mirror = make_patches.mirror_path()
    if not mirror.exists():
        raise SuiteError(f"no paramiko mirror at {mirror} (set PARAMIKO_MIRROR)")
    series = sorted(make_patches.SERIES.glob("*.patch"))
    if not series:
        raise SuiteError("patches/upstream/ has no series")
    trees = []
    for kind in ("pristine", "patched"):
        where = _fresh(into / kind) / "paramiko"
        _run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(mirror),
              str(where)])  # fmt: skip
        _run(["git", "-C", str(where), "checkout", "--quiet", "--detach",
              make_patches.UPSTREAM_COMMIT])  # fmt: skip
        trees.append(where)
    _run(["git", "-C", str(trees[1]), "apply", *map(str, series)])
    return trees[0], trees[1]


# -- venvs -----------------------------------------------------------------------


def venv_for(target: Target, pristine: Path, cache: Path) -> tuple[Path, str]:
    """A venv with the target's test requirements and paramiko's runtime
    requirements (and the pristine paramiko, which neither run imports)."""
    python = find_python(target.python)
    version = _run([python, "-c", "import platform; print(platform.python_version())"])
    full = version.stdout.strip()
    key = hashlib.sha256(
        json.dumps([full, target.test_deps, target.name, "installed"]).encode()
    ).hexdigest()[:12]
    venv = cache / "venvs" / f"{target.name}-py{full}"
    stamp = venv / "proxyfix-stamp"
    if stamp.exists() and stamp.read_text() == key:
        return venv / "bin" / "python", full
    if venv.exists():
        shutil.rmtree(venv)
    _run([python, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The pristine tree brings paramiko's runtime requirements, with the
    # right markers, and the distribution's metadata (main reads its version
    # from it); each run imports the tree it runs in, from its working
    # directory, which run_suite() checks.
    _run([*pip, str(pristine), *target.test_deps], timeout=1800)
    stamp.write_text(key)
    return venv / "bin" / "python", full


# -- runs ------------------------------------------------------------------------


@dataclass
class Outcome:
    results: dict[str, str]
    seconds: float

    def count(self, what: str, proxy: bool | None = None) -> int:
        return sum(
            1
            for test, result in self.results.items()
            if (what == "collected" or result == what)
            and (proxy is None or test.startswith(PROXY_TESTS) == proxy)
        )


def run_suite(
    python: Path, tree: Path, xml: Path, args: tuple[str, ...] = ()
) -> Outcome:
    """The tree's suite under ``python``: test id -> passed/failed/skipped."""
    check = subprocess.run(
        [str(python), "-c", "import paramiko; print(paramiko.__file__)"],
        cwd=tree, capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    if not check.stdout.strip().startswith(str(tree)):
        where = check.stdout or check.stderr
        raise SuiteError(f"{tree}: paramiko is imported from {where}")
    started = time.monotonic()
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q",
           f"--timeout={TEST_TIMEOUT}", f"--junitxml={xml}",
           "-o", "junit_family=xunit1", *args, "tests"]  # fmt: skip
    if xml.exists():
        xml.unlink()
    try:
        subprocess.run(
            cmd,
            cwd=tree,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=RUN_TIMEOUT,
            env=_env(),
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise SuiteError(f"{tree}: the suite ran over {RUN_TIMEOUT} s") from None
    if not xml.exists():
        raise SuiteError(f"{tree}: pytest wrote no report (it did not start?)")
    return Outcome(parse_junit(xml), time.monotonic() - started)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


_RANK = {"passed": 0, "skipped": 1, "failed": 2}


def parse_junit(xml: Path) -> dict[str, str]:
    """test id -> worst outcome (a test with a teardown error appears twice)."""
    results: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('file') or case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            result = "failed"
        elif case.find("skipped") is not None:
            result = "skipped"
        else:
            result = "passed"
        if _RANK[result] >= _RANK[results.get(test, "passed")]:
            results[test] = result
    return results


def regressions(pristine: Outcome, patched: Outcome) -> list[str]:
    """Tests outside test_proxy that pass pristine and fail or are gone patched."""
    return sorted(
        f"{test}: {patched.results.get(test, 'missing')}"
        for test, result in pristine.results.items()
        if result == "passed"
        and not test.startswith(PROXY_TESTS)
        and patched.results.get(test) != "passed"
        and patched.results.get(test) != "skipped"
    ) + sorted(
        f"{test}: skipped (passed pristine)"
        for test, result in pristine.results.items()
        if result == "passed" and patched.results.get(test) == "skipped"
    )


def rerun(
    python: Path, tree: Path, tests: list[str], xml: Path, args: tuple[str, ...] = ()
) -> dict[str, str]:
    """Run ``tests`` again alone (a timing-sensitive test under load)."""
    ids = [t.split(": ")[0] for t in tests]
    nodes = sorted({t.split("::")[0] for t in ids})
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q",
           f"--timeout={TEST_TIMEOUT}", f"--junitxml={xml}",
           "-o", "junit_family=xunit1", *args, *nodes]  # fmt: skip
    subprocess.run(cmd, cwd=tree, capture_output=True, timeout=RUN_TIMEOUT,
                   env=_env(), start_new_session=True)  # fmt: skip
    return parse_junit(xml) if xml.exists() else {}


# -- main ------------------------------------------------------------------------


def check(name: str, cache: Path) -> dict[str, object]:
    target = TARGETS[name]
    where = cache / "trees" / name
    pristine, patched = (
        main_trees(where) if name == "main" else release_trees(name, where)
    )
    python, version = venv_for(target, pristine, cache)
    runs = {}
    for kind, tree in (("pristine", pristine), ("patched", patched)):
        print(f"  {name}: running the {kind} suite on Python {version}", flush=True)
        runs[kind] = run_suite(python, tree, where / f"{kind}.xml", target.pytest_args)
    bad = regressions(runs["pristine"], runs["patched"])
    flaky = []
    if bad:
        again = rerun(python, patched, bad, where / "rerun.xml", target.pytest_args)
        flaky = [b for b in bad if again.get(b.split(": ")[0]) == "passed"]
        bad = [b for b in bad if b not in flaky]
    row: dict[str, object] = {"target": name, "python": version}
    for kind, outcome in runs.items():
        row[kind] = {
            what: outcome.count(what)
            for what in ("collected", "passed", "failed", "skipped")
        }
        row[kind]["test_proxy"] = outcome.count("collected", proxy=True)  # type: ignore[index]
        row[kind]["seconds"] = round(outcome.seconds)  # type: ignore[index]
    row["regressions"] = bad
    row["flaky"] = flaky
    row["failed_both"] = sorted(
        t
        for t, r in runs["patched"].results.items()
        if r == "failed" and runs["pristine"].results.get(t) == "failed"
    )
    return row


def table(rows: list[dict[str, object]]) -> str:
    head = (
        f"{'target':<8} {'python':<8} {'tree':<9} {'collected':>9} {'passed':>7} "
        f"{'failed':>6} {'skipped':>7} {'proxy':>5}  regressions"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        for kind in ("pristine", "patched"):
            c = row[kind]
            assert isinstance(c, dict)
            reg = row["regressions"] if kind == "patched" else []
            assert isinstance(reg, list)
            lines.append(
                f"{row['target']:<8} {row['python']:<8} {kind:<9} "
                f"{c['collected']:>9} {c['passed']:>7} {c['failed']:>6} "
                f"{c['skipped']:>7} {c['test_proxy']:>5}  "
                + ("" if kind == "pristine" else str(len(reg)))
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "targets", nargs="*", default=list(make_patches.VERSIONS),
        help=f"of {', '.join(TARGETS)} (default: the releases)",
    )  # fmt: skip
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "paramiko-proxyfix" / "upstream-suite",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    rows = []
    try:
        for name in args.targets:
            rows.append(check(name, args.cache))
    except (SuiteError, BuildError, make_patches.PatchError) as exc:
        print(f"check_upstream_suite: {exc}", file=sys.stderr)
        return 2
    print()
    print(table(rows))
    for row in rows:
        for label in ("regressions", "flaky", "failed_both"):
            items = row[label]
            assert isinstance(items, list)
            if items:
                print(f"\n{row['target']} {label.replace('_', ' ')}:")
                print("\n".join(f"  {item}" for item in items))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    worst = any(row["regressions"] for row in rows)
    print("\nregression" if worst else "\nno regression")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
