"""patches/: current with the fix's one source, within budget, and proven.

The sdists come from PyPI through pip, cached (PARAMIKO_PROXYFIX_SDISTS, by
default ~/.cache/paramiko-proxyfix/sdists). The fast tests need no paramiko
mirror: the upstream series is checked against the generator through the
blob ids and hunks it carries. The slow tests build patched wheels of 2.12.0
and 5.1.0 into a venv and run tools/native_check.py and the patch's own
tests/test_proxy.py there, without paramiko_proxyfix, and check every changed
file with black 22.12.0 and flake8 in paramiko's configuration.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

TOOLS = REPO_ROOT / "tools"
sys.path.insert(0, str(TOOLS))
import build_patched_wheel  # noqa: E402
import make_patches  # noqa: E402

VERSIONS = make_patches.VERSIONS
#: Lines added plus removed outside tests/, per patch.
BUDGET = 400
#: paramiko's .flake8.
FLAKE8 = (
    "--max-line-length=79",
    "--extend-ignore=E124,E125,E128,E261,E301,E302,E303,E402,E721,W503,E203,E722",
)


def _pristine(version: str) -> dict[str, str]:
    names = (make_patches.PROXY, make_patches.EXCEPTIONS, make_patches.INIT)
    return make_patches.read_sdist(version, (*names, make_patches.TEST))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("version", VERSIONS)
def test_patch_is_generated_from_the_current_code(version: str) -> None:
    """Regenerate and compare byte for byte: a change to upstream/ or
    tests/upstream/test_proxy.py without `python tools/make_patches.py`
    fails here."""
    path = REPO_ROOT / "patches" / f"paramiko-{version}.patch"
    stored, fresh = path.read_text(), make_patches.make_patch(version)
    if stored != fresh:
        pairs = zip(stored.splitlines(), fresh.splitlines())
        first = next((n for n, (a, b) in enumerate(pairs, 1) if a != b), "the end")
        pytest.fail(
            f"{path.name} is stale from line {first}: run python tools/make_patches.py",
            pytrace=False,
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", VERSIONS)
def test_patch_changes_only_paramikos_four_files_within_budget(version: str) -> None:
    text = (REPO_ROOT / "patches" / f"paramiko-{version}.patch").read_text()
    changed = [line[6:] for line in text.splitlines() if line.startswith("+++ b/")]
    assert changed == [
        make_patches.PROXY,
        make_patches.EXCEPTIONS,
        make_patches.INIT,
        make_patches.TEST,
    ]
    count = make_patches.changed_lines(text)
    assert 300 < count <= BUDGET, f"{count} lines outside tests/ (budget {BUDGET})"


@pytest.mark.timeout(60)
def test_changed_lines_counts_as_diffstat_does() -> None:
    patch = (
        "preamble\n--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n-a\n+b\n c\n"
        "--- a/tests/t.py\n+++ b/tests/t.py\n@@ -1 +1 @@\n-x\n+y\n"
    )
    assert make_patches.changed_lines(patch) == 2
    assert make_patches.changed_lines(patch, outside="nowhere/") == 4


@pytest.mark.timeout(120)
def test_the_patched_files_hold_the_fix_and_nothing_of_ours() -> None:
    new = make_patches.edited(_pristine("5.1.0"))
    proxy = new[make_patches.PROXY]
    assert proxy.startswith("# Copyright (C) 2012  Yipit")
    assert "from .ssh_exception" not in proxy and "paramiko_proxyfix" not in proxy
    assert "from paramiko.ssh_exception import (\n    ProxyCommandClosed," in proxy
    ours = (make_patches.SOURCES / "proxy.py").read_text()
    assert proxy.endswith(ours[ours.index("\nclass ProxyCommand(") :])
    exceptions = new[make_patches.EXCEPTIONS]
    assert "import signal\nimport socket\n" in exceptions
    failure = exceptions.index("class ProxyCommandFailure(")
    assert failure < exceptions.index("class ProxyCommandExited(")
    assert exceptions.index("class ProxyCommandClosed(") < exceptions.index(
        "class NoValidConnectionsError("
    )
    assert (
        "    ProxyCommandExited,\n    ProxyCommandFailure,\n" in new[make_patches.INIT]
    )
    old_init = make_patches.init_module(_pristine("2.12.0")[make_patches.INIT])
    assert '    "ProxyCommandExited",\n    "ProxyCommandFailure",\n' in old_init
    for text in new.values():
        compile(text, "<patched>", "exec")


@pytest.mark.timeout(60)
def test_generator_refuses_malformed_input() -> None:
    refuse = pytest.raises
    error = make_patches.PatchError
    with refuse(error, match="before the first import"):
        make_patches.proxy_module("x = 1\nimport os\nclass ProxyCommand(object):\n")
    with refuse(error, match="no license comment"):
        make_patches.proxy_module("import os\nclass ProxyCommand(object):\n", "")
    with refuse(error, match="no class ProxyCommand"):
        make_patches.proxy_module("# license\nimport os\n", "")
    with refuse(error, match="once each"):
        make_patches.our_proxy("# ours\nimport os\n")
    relative = make_patches._RELATIVE + "from .other import thing\n"
    with refuse(error, match="relative import"):
        make_patches.our_proxy("import os\n" + make_patches._ABSOLUTE + relative)
    with refuse(error, match="must import, then define"):
        make_patches.our_exceptions("import signal\n\n\nclass Other(Exception):\n"
                                    "    pass\n")  # fmt: skip
    pristine = _pristine("5.1.0")
    exceptions = pristine[make_patches.EXCEPTIONS]
    with refuse(error, match="one `import socket`"):
        make_patches.exceptions_module(exceptions.replace("import socket\n", ""), "")
    with refuse(error, match="already imports signal"):
        make_patches.exceptions_module("import signal\n" + exceptions, "")
    renamed = exceptions.replace("class ProxyCommandFailure(", "class Renamed(")
    with refuse(error, match="class ProxyCommandFailure"):
        make_patches.exceptions_module(renamed, "")
    init = pristine[make_patches.INIT]
    with refuse(error, match="naming ProxyCommandFailure"):
        make_patches.init_module(init.replace("    ProxyCommandFailure,\n", ""))
    with refuse(error, match="already names"):
        make_patches.init_module(make_patches.init_module(init))
    old_init = _pristine("2.12.0")[make_patches.INIT]
    with refuse(error, match="__all__ does not list"):
        make_patches.init_module(old_init.replace('    "ProxyCommandFailure",\n', ""))
    with refuse(error, match="no list of entries"):
        make_patches.changelog("Changelog\n=========\n\nNothing yet.\n")


@pytest.mark.timeout(60)
def test_main_reports_a_malformed_input_as_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(version: str, cache: object = None) -> str:
        raise make_patches.PatchError("paramiko/proxy.py has no class ProxyCommand")

    monkeypatch.setattr(make_patches, "make_patch", broken)
    assert make_patches.main(["--check", "5.1.0"]) == 2
    assert "no class ProxyCommand" in capsys.readouterr().err


# -- the upstream series, without the mirror ---------------------------------------


def _blob_id(text: str) -> str:
    data = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _series() -> dict[str, str]:
    return {p.name: p.read_text() for p in make_patches.SERIES.glob("*.patch")}


@pytest.mark.timeout(60)
def test_upstream_series_names_its_base_and_carries_the_changelog_entry() -> None:
    series = _series()
    assert len(series) == len(make_patches.COMMITS)
    text = "".join(series[name] for name in sorted(series))
    assert f"base-commit: {make_patches.UPSTREAM_COMMIT}" in text
    assert (
        make_patches.UPSTREAM_COMMIT in (make_patches.SERIES / "README.md").read_text()
    )
    for subject, _, _ in make_patches.COMMITS:
        assert subject.split(";")[0] in text.replace("\n ", " ")
    entry = (make_patches.SERIES / "changelog-entry.rst").read_text()
    assert "".join(f"+{line}\n" for line in entry.splitlines()) in text
    assert ":bug:`1277`" in entry
    for issue in ("1713", "1715", "1909", "2261"):
        assert f":issue:`{issue}`" in entry
    files = make_patches.series_files(series)
    assert sorted(files) == sorted(
        [
            make_patches.PROXY,
            make_patches.EXCEPTIONS,
            make_patches.INIT,
            make_patches.TEST,
            make_patches.CHANGELOG,
        ]
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "path", [make_patches.PROXY, make_patches.EXCEPTIONS, make_patches.TEST]
)
@pytest.mark.timeout(60)
def test_upstream_series_carries_exactly_the_generated_file(
    path: str, tmp_path: Path
) -> None:
    """The series' file before (found among the releases by its blob id),
    the series applied to it, and the generator's output from it: all one."""
    series = _series()
    before, after = make_patches.series_files(series)[path]
    bases = [
        text
        for version in VERSIONS
        if _blob_id(text := make_patches.read_sdist(version, (path,))[path]) == before
    ]
    assert bases, f"no release has the series' {path} (blob {before})"
    base = bases[0]
    generate = {
        make_patches.PROXY: make_patches.proxy_module,
        make_patches.EXCEPTIONS: make_patches.exceptions_module,
        make_patches.TEST: lambda _: make_patches.our_test(),
    }[path]
    wanted = generate(base)
    assert _blob_id(wanted) == after, f"the series' {path} is not the generated one"
    # The hunks themselves, applied, give that text.
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(base)
    for name in sorted(series):
        done = subprocess.run(
            ["git", "apply", f"--include={path}", str(make_patches.SERIES / name)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / path).read_text() == wanted


# -- applying ---------------------------------------------------------------------


def _unpack(version: str, into: Path) -> Path:
    return build_patched_wheel.unpack(version, into)


def _apply(tree: Path, patch: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOLS / "build_patched_wheel.py"), "0",
         "--tree", str(tree), "--patch", str(patch)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", VERSIONS)
def test_each_patch_applies_to_its_pristine_sdist(version: str, tmp_path: Path) -> None:
    tree = _unpack(version, tmp_path)
    done = _apply(tree, REPO_ROOT / "patches" / f"paramiko-{version}.patch")
    assert done.returncode == 0, done.stderr
    assert list(tree.rglob("*.rej")) == [] and list(tree.rglob("*.orig")) == []
    new = make_patches.edited(_pristine(version))
    for name, text in new.items():
        assert (tree / name).read_text() == text, name


@pytest.mark.timeout(300)
def test_a_patch_that_does_not_apply_is_reported_and_changes_nothing(
    tmp_path: Path,
) -> None:
    tree = _unpack("5.1.0", tmp_path)
    before = {p: p.read_text() for p in (tree / "paramiko").glob("*.py")}
    # 2.12's patch adds to an __all__ and edits a test file 5.1.0 does not have.
    done = _apply(tree, REPO_ROOT / "patches" / "paramiko-2.12.0.patch")
    assert done.returncode == 1
    assert "paramiko-2.12.0.patch does not apply to" in done.stderr
    assert "Traceback" not in done.stderr
    assert {p: p.read_text() for p in (tree / "paramiko").glob("*.py")} == before
    missing = _apply(tree, tmp_path / "nope.patch")
    assert missing.returncode == 1 and "no such patch" in missing.stderr


# -- slow: patched wheels, without paramiko_proxyfix -------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with paramiko's dependencies, the test tools, black and flake8,
    and neither paramiko nor this package."""
    path = tmp_path_factory.mktemp("patched") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    deps = ["bcrypt", "cryptography", "pynacl", "invoke", "six", "pytest",
            "pytest-timeout", "black==22.12.0", "flake8~=7.3"]  # fmt: skip
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *deps],
        check=True,
        timeout=900,
    )  # fmt: skip
    yield python
    shutil.rmtree(path.parent, ignore_errors=True)


def _child(
    python: Path,
    cwd: Path,
    args: list[str],
    pythonpath: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a session of its own, without our PYTHON* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if pythonpath is not None:
        clean["PYTHONPATH"] = str(pythonpath)
    clean.update(env or {})
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean,
        stdin=subprocess.DEVNULL,
        timeout=300,
        start_new_session=True,
    )


def _native_check(python: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """tools/native_check.py in its own session, outside the repository."""
    return _child(python, cwd, ["-W", "ignore", str(TOOLS / "native_check.py")])


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("version", ["2.12.0", "5.1.0"])
def test_patched_wheel_fixes_its_release(
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
    assert "FAIL  high_descriptors" in before.stdout
    # Patched: the wheel tools/build_patched_wheel.py builds, as a packager would.
    built = subprocess.run(
        [sys.executable, str(TOOLS / "build_patched_wheel.py"), version,
         "--out", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob(f"paramiko-{version}-*.whl"))
    subprocess.run([*pip, str(wheel)], check=True, timeout=300)
    after = _native_check(venv, tmp_path)
    print(after.stdout)
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"paramiko {version} from {venv.parent.parent}" in after.stdout
    assert "6 passed, 0 failed" in after.stdout
    # The patch's own tests/test_proxy.py, on the installed wheel alone.
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(REPO_ROOT / "tests" / "upstream" / "test_proxy.py", tests)
    done = _child(
        venv, tests, ["-m", "pytest", "-p", "no:cacheprovider", "-q", "test_proxy.py"]
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "paramiko_proxyfix" not in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_patched_paramiko_keeps_its_fix_under_the_package(
    venv: Path, tmp_path: Path
) -> None:
    """With the package imported, a patched paramiko's own methods stay and
    the shim fills in their override points; PARAMIKO_PROXYFIX_DISABLE
    leaves the built-in fix in place."""
    tree = _unpack("5.1.0", tmp_path)
    assert _apply(tree, REPO_ROOT / "patches" / "paramiko-5.1.0.patch").returncode == 0
    pip = [str(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--force-reinstall", str(tree)]  # fmt: skip
    subprocess.run(pip, check=True, timeout=300)
    done = _child(venv, tmp_path, ["-c", BUILTIN_CHECK], pythonpath=REPO_ROOT)
    assert done.returncode == 0 and "shim on the built-in fix" in done.stdout, (
        done.stdout + done.stderr
    )
    done = _child(
        venv,
        tmp_path,
        ["-c", DISABLED_CHECK],
        pythonpath=REPO_ROOT,
        env={"PARAMIKO_PROXYFIX_DISABLE": "1"},
    )
    assert done.returncode == 0 and "built-in fix kept" in done.stdout, (
        done.stdout + done.stderr
    )


#: ``import paramiko_proxyfix`` over a patched paramiko.
BUILTIN_CHECK = """
import paramiko
from paramiko.proxy import ProxyCommand
own = dict(vars(ProxyCommand))
import paramiko_proxyfix as pf
from paramiko_proxyfix import hooks
assert pf.is_installed() and pf._patch.is_built_in()
for name in ("recv", "send", "close", "__init__"):
    assert vars(ProxyCommand)[name] is own[name], name
assert vars(ProxyCommand)["_spawn"] is hooks._spawn
assert pf.ProxyCommandExited is paramiko.ProxyCommandExited
assert pf.ProxyCommandClosed is paramiko.ssh_exception.ProxyCommandClosed
p = ProxyCommand("cat")
assert [d["pid"] for d in pf.proxies()] == [p.process.pid]
p.close()
assert p.process.returncode is not None and pf.proxies() == []
print("shim on the built-in fix")
"""

#: PARAMIKO_PROXYFIX_DISABLE=1 cannot take out what paramiko itself carries.
DISABLED_CHECK = """
from paramiko.proxy import ProxyCommand
own = dict(vars(ProxyCommand))
import paramiko_proxyfix as pf
assert dict(vars(ProxyCommand)) == own
assert "_spawn" in own and pf.is_installed()
p = ProxyCommand("cat")
p.close()
assert p.process.returncode is not None and p.process.stdout.closed
print("built-in fix kept")
"""


def _black(venv: Path, text: str) -> str:
    done = subprocess.run(
        [str(venv), "-m", "black", "-l", "79", "-q", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _flake8(venv: Path, tree: Path, name: str) -> set[str]:
    """flake8's complaints about ``name``, without their line numbers."""
    done = _child(venv, tree, ["-m", "flake8", "--isolated", *FLAKE8, name])
    return {line.split(":", 3)[-1].strip() for line in done.stdout.splitlines()}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", VERSIONS)
def test_patched_files_are_black_and_flake8_clean(
    version: str, venv: Path, tmp_path: Path
) -> None:
    """black 22.12.0 -l 79 and flake8 (paramiko's .flake8) find nothing in
    what the patch writes. A release file that black 22.12 would already
    reformat (2.12.0's ssh_exception.py, from black 18 days) must come out
    of black exactly as the patch applied to black's own version of it."""
    pristine = _pristine(version)
    tree = _unpack(version, tmp_path)
    patch = REPO_ROOT / "patches" / f"paramiko-{version}.patch"
    assert _apply(tree, patch).returncode == 0
    generate = {
        make_patches.PROXY: make_patches.proxy_module,
        make_patches.EXCEPTIONS: make_patches.exceptions_module,
        make_patches.INIT: make_patches.init_module,
        make_patches.TEST: lambda _: make_patches.our_test(),
    }
    old_tree = _unpack(version, tmp_path / "pristine")
    for name, edit in generate.items():
        patched = (tree / name).read_text()
        formatted = _black(venv, patched)
        if _black(venv, pristine[name]) == pristine[name]:
            assert formatted == patched, f"black would reformat {name}"
        else:
            assert formatted == edit(_black(venv, pristine[name])), name
        new = _flake8(venv, tree, name) - _flake8(venv, old_tree, name)
        assert not new, f"flake8 on {name}: {sorted(new)}"
        if name != make_patches.INIT:  # all of it is ours, or nearly
            assert _flake8(venv, tree, name) == set(), name
