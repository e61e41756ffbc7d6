"""The fleet view's run directory (paramiko_proxyfix/rundir.py), with real directories.

Where it is (XDG_RUNTIME_DIR, else TMPDIR's ``paramiko_proxyfix-<uid>``),
what is refused (another user's, a symlink, a shared parent that is not
sticky), what is repaired (our own with a loose mode), and that every file
operation goes through the descriptor opened and checked once: a directory
swapped at the path, before or after the open, gets nothing.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paramiko_proxyfix import fleet, rundir
from tests.support.userpy import system_user

pytestmark = pytest.mark.timeout(30)

OTHER_USER = "proxyfix-other"
_REAL_MKDIR = os.mkdir


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """XDG_RUNTIME_DIR, a fresh 0700 directory; yields the run dir's path."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(rundir, "_warned_pid", 0)
    yield runtime / "paramiko_proxyfix"


@pytest.fixture
def tmpdir_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No XDG_RUNTIME_DIR; TMPDIR a fresh sticky 1777 directory (as /tmp)."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR anew
    monkeypatch.setattr(rundir, "_warned_pid", 0)
    yield shared / f"paramiko_proxyfix-{os.getuid()}"


def other_uid() -> int:
    """A user that is not us, made as a system user if missing (root only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to give a directory to another user")
    return system_user(OTHER_USER)


def refused(create: bool = True) -> str:
    with pytest.raises(rundir.Refused) as info:
        rundir.open_dir(create=create)
    return str(info.value)


def opened(create: bool = True) -> rundir.RunDir:
    rd = rundir.open_dir(create=create)
    assert rd is not None
    return rd


# -- where, and what is refused ------------------------------------------------


def test_without_xdg_it_is_tmpdirs_paramiko_proxyfix_uid_made_0700(
    tmpdir_only: Path,
) -> None:
    old = os.umask(0o777)  # no umask decides the mode, not even this one
    try:
        with opened() as rd:
            assert rd.path == str(tmpdir_only)
    finally:
        os.umask(old)
    st = tmpdir_only.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert rundir.open_dir(create=False) is not None


def test_absent_and_not_created_is_none_not_refused(xdg: Path) -> None:
    assert rundir.open_dir(create=False) is None
    assert not xdg.exists()


@pytest.mark.parametrize("place", ["tmpdir", "xdg"])
def test_a_directory_of_another_user_is_refused_and_left_alone(
    place: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue("tmpdir_only" if place == "tmpdir" else "xdg")
    path.mkdir()
    path.chmod(0o777)  # even writable for us: still not ours
    os.chown(path, other_uid(), -1)
    why = refused()
    assert f"{path} belongs to uid" in why, why
    assert os.listdir(path) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o777  # not "fixed" either


@pytest.mark.parametrize("place", ["tmpdir", "xdg"])
def test_a_symlink_to_a_directory_of_ours_is_refused(
    place: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path: Path = request.getfixturevalue("tmpdir_only" if place == "tmpdir" else "xdg")
    target = tmp_path / "ours"
    target.mkdir(mode=0o700)
    path.symlink_to(target)
    assert refused() == f"{path} is a symbolic link"
    assert refused(create=False) == f"{path} is a symbolic link"
    assert os.listdir(target) == []


def test_a_file_at_the_path_is_refused(xdg: Path) -> None:
    xdg.write_text("")
    assert refused() == f"{xdg} is not a directory"


def test_a_shared_parent_that_is_not_sticky_is_refused(
    xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg.parent.chmod(0o777)
    why = refused()
    assert "writable by others (mode 0777) and not sticky" in why, why
    assert not xdg.exists()  # refused before anything was made in it
    xdg.parent.chmod(0o1777)  # as /tmp: our directory cannot be moved by others
    opened().close()


def test_a_parent_of_another_user_is_refused(xdg: Path) -> None:
    os.chown(xdg.parent, other_uid(), -1)
    assert "neither us nor root" in refused()


def test_our_own_directory_with_a_loose_mode_is_set_back_to_0700(xdg: Path) -> None:
    xdg.mkdir()
    xdg.chmod(0o777)
    opened(create=False).close()
    assert stat.S_IMODE(xdg.stat().st_mode) == 0o700


# -- swapped at the path: the descriptor decides ------------------------------


def _swap_after_mkdir(monkeypatch: pytest.MonkeyPatch, replace: Any) -> list[str]:
    """Make os.mkdir, as rundir calls it, create the directory and then let
    ``replace(parent_fd, name)`` swap something in before rundir opens it."""
    calls: list[str] = []

    def mkdir(name: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        _REAL_MKDIR(name, mode, dir_fd=dir_fd)
        if dir_fd is not None:
            calls.append(name)
            replace(dir_fd, name)

    monkeypatch.setattr(os, "mkdir", mkdir)
    return calls


def test_a_symlink_swapped_in_between_mkdir_and_open_is_refused(
    xdg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ours"
    target.mkdir(mode=0o700)

    def to_symlink(parent_fd: int, name: str) -> None:
        os.rmdir(name, dir_fd=parent_fd)
        os.symlink(target, name, dir_fd=parent_fd)

    calls = _swap_after_mkdir(monkeypatch, to_symlink)
    assert refused() == f"{xdg} is a symbolic link"
    assert calls == ["paramiko_proxyfix"]
    # Nor does a publishing process write through it.
    fleet._write({"pid": 12345})
    assert os.listdir(target) == []


def test_another_users_directory_swapped_in_between_mkdir_and_open_is_refused(
    xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = other_uid()

    def to_theirs(parent_fd: int, name: str) -> None:
        os.rename(name, name + ".ours", src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        _REAL_MKDIR(name, 0o700, dir_fd=parent_fd)
        os.chown(name, uid, -1, dir_fd=parent_fd)

    _swap_after_mkdir(monkeypatch, to_theirs)
    assert "belongs to uid" in refused()
    fleet._write({"pid": 12345})
    assert os.listdir(xdg) == []


def test_a_directory_swapped_after_opening_gets_nothing(xdg: Path) -> None:
    with opened() as rd:
        moved = xdg.with_name("moved")
        xdg.rename(moved)
        xdg.mkdir(mode=0o700)  # what the path names now
        rd.write("7.json", b"{}")
        assert rd.names() == ["7.json"]
        assert rd.read("7.json") == b"{}"
        assert os.listdir(moved) == ["7.json"] and os.listdir(xdg) == []
        (xdg / "8.json").write_text("{}")
        assert rd.unlink("8.json") is False  # not in the opened directory
        assert rd.unlink("7.json") is True
        assert os.listdir(moved) == [] and os.listdir(xdg) == ["8.json"]


# -- files in it ----------------------------------------------------------------


def test_a_snapshot_is_written_atomically_through_an_exclusive_temp_file(
    xdg: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.write_text("untouched")
    with opened() as rd:
        rd.write("5.json", b"one")
        # A temporary file left behind, even a symlink: replaced, not followed.
        os.symlink(outside, xdg / ".5.json.tmp")
        rd.write("5.json", b"two")
        assert sorted(os.listdir(xdg)) == ["5.json"]
        assert rd.read("5.json") == b"two"
        st = (xdg / "5.json").stat()
        assert stat.S_IMODE(st.st_mode) == 0o600
    assert outside.read_text() == "untouched"
    with pytest.raises(ValueError), opened() as rd:
        rd.write("../escape.json", b"")


def test_only_small_regular_files_of_ours_are_read(xdg: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not for the fleet view")
    with opened() as rd:
        os.symlink(secret, xdg / "1.json")
        os.mkfifo(xdg / "2.json")  # would block an open() without O_NONBLOCK
        (xdg / "3.json").write_bytes(b"x" * (rundir.MAX_FILE + 1))
        (xdg / "4.json").write_text("{}")
        assert [rd.read(f"{i}.json") for i in (1, 2, 3, 4)] == [
            None,
            None,
            None,
            b"{}",
        ]
        if os.geteuid() == 0:
            os.chown(xdg / "4.json", other_uid(), -1)
            assert rd.read("4.json") is None


# -- the fleet view on a refused directory --------------------------------------


def test_a_refused_run_dir_makes_the_reply_blind_and_warns_once(
    tmpdir_only: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "ours"
    target.mkdir(mode=0o700)
    tmpdir_only.symlink_to(target)
    caplog.set_level(logging.DEBUG, logger="paramiko_proxyfix")
    for _ in range(3):
        report = fleet.report()
        assert report["blind"] == f"{tmpdir_only} is a symbolic link", report
        fleet._write({"pid": 12345})
    assert fleet.close_idle(60)["blind"] == report["blind"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"(pid {os.getpid()}; said once per process)" in warnings[0].getMessage()
    assert os.listdir(target) == []


def test_a_usable_but_empty_run_dir_is_not_blind(xdg: Path) -> None:
    assert "blind" not in fleet.report()
    xdg.mkdir(mode=0o700)
    assert "blind" not in fleet.report()
