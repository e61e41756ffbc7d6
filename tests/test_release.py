"""The release: sdist and wheel built from this tree, their metadata, --version."""

from __future__ import annotations

import email.parser
import email.policy
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import paramiko
import pytest

import paramiko_proxyfix
from paramiko_proxyfix import _version
from tests.support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import make_patches

VERSION = _version.__version__
URL = "https://github.com/paramiko-proxyfix/paramiko-proxyfix"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built once with ``python -m build``."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


def wheel(dist: Path) -> Path:
    (path,) = dist.glob("*.whl")
    return path


def sdist(dist: Path) -> Path:
    (path,) = dist.glob("*.tar.gz")
    return path


def metadata(dist: Path) -> Message:
    with zipfile.ZipFile(wheel(dist)) as whl:
        raw = whl.read(f"paramiko_proxyfix-{VERSION}.dist-info/METADATA")
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_holds_the_package_and_nothing_else(dist: Path) -> None:
    assert wheel(dist).name == f"paramiko_proxyfix-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel(dist)) as whl:
        names = set(whl.namelist())
    package = {
        f"paramiko_proxyfix/{p.relative_to(REPO_ROOT / 'paramiko_proxyfix')}"
        for p in (REPO_ROOT / "paramiko_proxyfix").rglob("*")
        if p.is_file() and p.suffix in (".py", ".pyi", ".typed")
    }
    assert {
        "paramiko_proxyfix/py.typed",
        "paramiko_proxyfix/_version.py",
        "paramiko_proxyfix/cli/__init__.py",
        "paramiko_proxyfix/cli/main.py",
    } <= package
    assert package <= names, sorted(package - names)
    assert f"paramiko_proxyfix-{VERSION}.dist-info/licenses/LICENSE" in names
    others = {
        n
        for n in names - package
        if not n.startswith(f"paramiko_proxyfix-{VERSION}.dist-info/")
    }
    assert not others, sorted(others)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sdist_builds_the_same_wheel_inputs(dist: Path) -> None:
    root = f"paramiko_proxyfix-{VERSION}"
    with tarfile.open(sdist(dist)) as tar:
        names = set(tar.getnames())
    for name in ("LICENSE", "README.md", "pyproject.toml", "PKG-INFO"):
        assert f"{root}/{name}" in names
    assert f"{root}/paramiko_proxyfix/py.typed" in names
    assert f"{root}/paramiko_proxyfix/cli/main.py" in names
    assert not [n for n in names if "/.venv/" in n or "/.tox/" in n]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_metadata(dist: Path) -> None:
    meta = metadata(dist)
    assert meta["Name"] == "paramiko-proxyfix"
    assert meta["Version"] == VERSION
    # setuptools 77+ writes PEP 639's field and refuses a License classifier
    # next to it, so the license is here and in the LICENSE file, not below.
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.9"
    assert "paramiko>=2.12" in meta.get_all("Requires-Dist")
    assert not [
        r
        for r in meta.get_all("Requires-Dist")
        if r.startswith("paramiko") and "<" in r
    ], "no upper bound: an unknown paramiko is warned about and left alone"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls == {
        "Homepage": URL,
        "Source": URL,
        "Issues": f"{URL}/issues",
        "Changelog": f"{URL}/blob/main/CHANGELOG.md",
    }
    classifiers = set(meta.get_all("Classifier"))
    assert {
        *(f"Programming Language :: Python :: 3.{n}" for n in range(9, 14)),
        "Operating System :: POSIX :: Linux",
        "Framework :: Celery",
        "Typing :: Typed",
        "Development Status :: 4 - Beta",
        "Topic :: System :: Networking",
    } <= classifiers
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().startswith("# paramiko-proxyfix")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_twine_check_passes(dist: Path) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout


def test_version_lives_in_one_place() -> None:
    assert paramiko_proxyfix.__version__ == VERSION
    assert make_patches.package_version() == VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


@pytest.mark.timeout(60)
def test_version_option() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "paramiko_proxyfix", "--version"],
        capture_output=True,
        text=True,
        timeout=50,
    )
    python = ".".join(str(n) for n in sys.version_info[:3])
    assert run.returncode == 0, run.stderr
    assert run.stdout == (
        f"paramiko-proxyfix {VERSION} (paramiko {paramiko.__version__}, "
        f"Python {python})\n"
    )
    # Nothing on stderr but what old paramiko releases warn at import
    # (paramiko 2.12 draws CryptographyDeprecationWarning from cryptography).
    noise = [x for x in run.stderr.splitlines() if "Warning" not in x]
    assert [x for x in noise if not x.startswith("  ")] == [], run.stderr


def test_each_difference_from_upstream_names_tests_that_exist() -> None:
    """docs/api.md's table of differences (which README's list points to)
    names a test for each row: every name must be a test in that file."""
    import ast
    import re

    text = (REPO_ROOT / "docs" / "api.md").read_text()
    table = text.split("## Differences from upstream", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) >= 15, rows
    for row in rows:
        names = re.findall(r"`(?:(test_\w+\.py)::)?(test_\w+)`", row)
        assert names, row
        current = None
        for file, name in names:
            current = file or current
            assert current, row
            tree = ast.parse((REPO_ROOT / "tests" / current).read_text())
            defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in defined, f"{current}::{name} (docs/api.md) does not exist"
