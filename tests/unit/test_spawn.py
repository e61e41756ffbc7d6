"""How a proxy is started: setpriv only from a root-owned path, exec's errors.

``_trusted(path)`` accepts a file only if it and its directory belong to root
and no one else may write them; ``_check_runnable`` fails as exec would,
before setpriv stands between us and the exec.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from paramiko_proxyfix import ProxyCommandStartError, execcheck, spawn

pytestmark = pytest.mark.timeout(10)

ROOT = os.geteuid() == 0
SH = os.path.realpath(shutil.which("sh") or "/bin/sh")


def executable(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def test_a_root_owned_system_binary_is_trusted() -> None:
    assert spawn._trusted(SH)
    for path in spawn.SETPRIV_PATHS:
        if os.path.exists(path):
            assert spawn._trusted(path)


def test_a_link_is_judged_by_what_it_points_to(tmp_path: Path) -> None:
    link = tmp_path / "setpriv"
    link.symlink_to(SH)
    assert spawn._trusted(str(link))
    bad = tmp_path / "bad"
    bad.symlink_to(executable(tmp_path / "target", 0o777))
    assert not spawn._trusted(str(bad))


def test_a_file_of_ours_is_trusted_only_when_we_are_root(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    assert spawn._trusted(str(executable(tmp_path / "prog"))) == ROOT


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_file_others_may_change_is_not_trusted(tmp_path: Path, mode: int) -> None:
    tmp_path.chmod(0o755)
    assert not spawn._trusted(str(executable(tmp_path / "prog", mode)))


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
def test_a_file_in_a_directory_others_may_change_is_not_trusted(
    tmp_path: Path, mode: int
) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    prog = executable(folder / "prog")
    folder.chmod(mode)
    try:
        assert not spawn._trusted(str(prog))
    finally:
        folder.chmod(0o755)


def test_a_file_of_another_user_is_not_trusted(tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("only root can give a file away")
    tmp_path.chmod(0o755)
    prog = executable(tmp_path / "prog")
    os.chown(prog, 65534, 65534)
    assert not spawn._trusted(str(prog))


def test_what_cannot_run_is_not_trusted(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    assert not spawn._trusted(str(tmp_path / "missing"))
    assert not spawn._trusted(str(tmp_path))  # a directory
    assert not spawn._trusted(str(executable(tmp_path / "plain", 0o644)))
    assert not spawn._trusted("/usr/bin")


def test_spawn_refuses_an_empty_command() -> None:
    with pytest.raises(ProxyCommandStartError, match="the command line is empty"):
        spawn.spawn([])


def test_check_runnable_searches_path_as_execvp_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, empty = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (first, second, empty):
        folder.mkdir()
    executable(first / "prog", 0o644)  # there, but not runnable
    monkeypatch.setenv("PATH", f"{empty}:{first}")
    with pytest.raises(OSError) as caught:
        execcheck.check_runnable("prog")
    assert caught.value.errno == errno.EACCES
    executable(second / "prog")
    monkeypatch.setenv("PATH", f"{empty}:{first}:{second}")
    execcheck.check_runnable("prog")  # the first runnable one wins
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(OSError) as caught:
        execcheck.check_runnable("prog")
    assert caught.value.errno == errno.ENOENT


def test_check_runnable_with_a_path(tmp_path: Path) -> None:
    execcheck.check_runnable(str(executable(tmp_path / "ok")))
    with pytest.raises(OSError) as caught:
        execcheck.check_runnable(str(tmp_path / "missing"))
    assert caught.value.errno == errno.ENOENT
    with pytest.raises(OSError) as caught:
        execcheck.check_runnable(str(tmp_path))
    assert caught.value.errno == errno.EACCES
