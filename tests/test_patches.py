"""patches/: current with the package's code, and proven on pristine releases.

The sdists come from PyPI through pip, cached (PARAMIKO_PROXYFIX_SDISTS, by
default ~/.cache/paramiko-proxyfix/sdists). The slow test builds a venv and
installs each release twice, pristine and patched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

TOOLS = REPO_ROOT / "tools"
sys.path.insert(0, str(TOOLS))
import make_patches  # noqa: E402

VERSIONS = make_patches.VERSIONS


@pytest.mark.timeout(600)
@pytest.mark.parametrize("version", VERSIONS)
def test_patch_is_generated_from_the_current_code(version: str) -> None:
    """Regenerate and compare byte for byte: a change to the fix's modules
    without `python tools/make_patches.py` fails here."""
    path = REPO_ROOT / "patches" / f"paramiko-{version}.patch"
    stored, fresh = path.read_text().splitlines(), make_patches.make_patch(version)
    if stored != fresh.splitlines() or path.read_text() != fresh:
        first = next(
            (
                n
                for n, (a, b) in enumerate(zip(stored, fresh.splitlines()), 1)
                if a != b
            ),
            min(len(stored), len(fresh.splitlines())),
        )
        pytest.fail(
            f"{path.name} is stale from line {first}: run python tools/make_patches.py",
            pytrace=False,
        )


def test_generator_refuses_code_that_cannot_live_inside_paramiko() -> None:
    with pytest.raises(make_patches.PatchError, match="relative imports"):
        make_patches._relative_imports("import paramiko_proxyfix.config\n", "x")
    with pytest.raises(make_patches.PatchError, match="relative imports"):
        make_patches._relative_imports("from ..other import y\n", "x")
    assert make_patches._relative_imports(
        "from . import registry\nfrom .config import current\n", "x"
    ) == {"registry", "config"}
    with pytest.raises(make_patches.PatchError, match="packages"):
        make_patches.packaging_file("[tool.setuptools]\n", "pyproject.toml")


def _unpack(version: str, into: Path) -> Path:
    with tarfile.open(make_patches.fetch_sdist(version)) as tar:
        tar.extractall(into)
    return into / f"paramiko-{version}"


def _apply(tree: Path, patch: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOLS / "build_patched_wheel.py"), "0",
         "--tree", str(tree), "--patch", str(patch)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_a_patch_that_does_not_apply_is_reported_and_changes_nothing(
    tmp_path: Path,
) -> None:
    tree = _unpack("5.1.0", tmp_path)
    before = (tree / "paramiko" / "packet.py").read_text()
    # 2.12's patch edits setup.py, which 5.1.0 does not have.
    done = _apply(tree, REPO_ROOT / "patches" / "paramiko-2.12.0.patch")
    print(done.stderr)
    assert done.returncode == 1
    assert "paramiko-2.12.0.patch does not apply to" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tree / "paramiko" / "packet.py").read_text() == before
    assert not (tree / "paramiko" / "_proxyfix").exists()
    missing = _apply(tree, tmp_path / "nope.patch")
    assert missing.returncode == 1 and "no such patch" in missing.stderr


# -- slow: each patch on its pristine release, without paramiko_proxyfix -----------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with paramiko's dependencies, and neither paramiko nor the package."""
    path = tmp_path_factory.mktemp("patched") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    pip = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    deps = ["bcrypt", "cryptography", "pynacl", "invoke", "six"]
    subprocess.run([*pip, *deps], check=True, timeout=600)
    yield python
    shutil.rmtree(path.parent, ignore_errors=True)


def _native_check(python: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """tools/native_check.py in its own session, outside the repository."""
    return _child(python, cwd, ["-W", "ignore", str(TOOLS / "native_check.py")])


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", VERSIONS)
def test_patch_fixes_its_pristine_release(
    version: str, venv: Path, tmp_path: Path
) -> None:
    pip = [str(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--force-reinstall"]  # fmt: skip
    # Pristine: the checks must see the bug (they are bounded, never hang).
    subprocess.run([*pip, f"paramiko=={version}"], check=True, timeout=300)
    before = _native_check(venv, tmp_path)
    print(before.stdout)
    assert before.returncode == 1, before.stderr
    assert "FAIL  killed_proxy" in before.stdout
    # Patched, from the sdist with patch -p1 as a packager would.
    tree = _unpack(version, tmp_path)
    applied = _apply(tree, REPO_ROOT / "patches" / f"paramiko-{version}.patch")
    assert applied.returncode == 0, applied.stderr
    subprocess.run([*pip, str(tree)], check=True, timeout=300)
    after = _native_check(venv, tmp_path)
    print(after.stdout)
    assert after.returncode == 0, after.stdout + after.stderr
    assert (
        f"paramiko {version} from {venv.parent.parent}" in after.stdout.splitlines()[0]
    )
    assert "5 passed, 0 failed" in after.stdout
    # Where the fix cannot run, the patched build imports as upstream's does.
    for blocked in ("fcntl", "subprocess", "select.poll"):
        done = _child(venv, tmp_path, ["-c", PLATFORM_CHECK.format(blocked=blocked)])
        assert done.returncode == 0 and "upstream kept" in done.stdout, done.stderr
    # One fix per process: the package finds the built-in one, patches nothing.
    done = _child(venv, tmp_path, ["-c", BUILTIN_CHECK], pythonpath=REPO_ROOT)
    assert done.returncode == 0 and "built-in fix used" in done.stdout, done.stderr


#: A Python without ``blocked``: ``import paramiko`` works and keeps upstream's
#: ProxyCommand, as a patched build must on Windows.
PLATFORM_CHECK = """
import sys
blocked = {blocked!r}
if blocked == "select.poll":
    import select
    del select.poll
else:
    sys.modules[blocked] = None
import paramiko
assert paramiko.ProxyCommand.recv.__module__ == "paramiko.proxy"
assert paramiko.proxy.ProxyCommandExited  # the names import anyway
print("upstream kept")
"""

#: ``import paramiko_proxyfix`` over a patched paramiko: nothing patched twice,
#: the API and both spellings of every exception are the built-in ones.
BUILTIN_CHECK = """
import sys, warnings
import paramiko
warnings.simplefilter("error")  # a second install would warn or patch
import paramiko_proxyfix as pf
builtin = sys.modules["paramiko._proxyfix._patch"]
assert builtin.is_installed() and pf.is_installed()
assert pf._patch._saved == {}, "patched a second time"
assert pf.uninstall() is False
for name in ("ProxyCommandExited", "ProxyCommandClosed", "ProxyCommandStartError"):
    assert getattr(pf, name) is getattr(paramiko.proxy, name), name
assert pf.close_all is sys.modules["paramiko._proxyfix.registry"].close_all
p = paramiko.ProxyCommand("cat")
assert [d["pid"] for d in pf.proxies()] == [p.process.pid]
pf.configure(close_timeout=0.5)
assert sys.modules["paramiko._proxyfix.config"].current().close_timeout == 0.5
assert pf.close_all() == 1 and p.closed and pf.proxies() == []
assert pf.stats()["closed"] == 1
print("built-in fix used")
"""


def _child(
    python: Path, cwd: Path, args: list[str], pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a session of its own, without our PYTHON* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        start_new_session=True,
    )
