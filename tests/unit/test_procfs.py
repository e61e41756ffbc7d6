"""/proc parsing: a fake /proc tree in tmp_path, checked against the real one.

``/proc/PID/stat`` holds the command name in parentheses, and that name may
hold spaces and parentheses itself; argv is NUL-separated bytes in any
encoding; descriptors are symlinks. Every reader takes a ``root`` argument,
so a fake tree exercises each case exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paramiko_proxyfix import procfs
from paramiko_proxyfix.procfs import ProcStat
from tests.support import wait_until
from tests.unit.procs import PATIENCE, Procs, read_line

pytestmark = pytest.mark.timeout(20)


def stat_line(
    pid: int,
    comm: str,
    state: str = "S",
    ppid: int = 1,
    pgid: int | None = None,
    session: int | None = None,
    start: int = 1000,
) -> bytes:
    """A /proc/PID/stat line as Linux writes it (52 fields)."""
    pgid = pid if pgid is None else pgid
    session = pgid if session is None else session
    # tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime
    # cstime priority nice num_threads itrealvalue, then starttime, then more
    middle = "0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0"
    rest = " ".join(["0"] * 30)
    return (
        f"{pid} ({comm}) {state} {ppid} {pgid} {session} {middle} {start} {rest}\n"
    ).encode()


class FakeProc:
    """A /proc tree in a directory: what each reader sees there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)

    @property
    def path(self) -> str:
        return str(self.root)

    def process(
        self,
        pid: int,
        comm: str = "proc",
        ppid: int = 1,
        cmdline: bytes | None = None,
        **kw: object,
    ) -> Path:
        folder = self.root / str(pid)
        folder.mkdir()
        (folder / "stat").write_bytes(stat_line(pid, comm, ppid=ppid, **kw))  # type: ignore[arg-type]
        (folder / "comm").write_text(comm[:15] + "\n")
        if cmdline is not None:
            (folder / "cmdline").write_bytes(cmdline)
        return folder


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


# -- stat ----------------------------------------------------------------------


def test_stat_reads_the_fields_the_package_uses(fake: FakeProc) -> None:
    fake.process(42, "ssh", state="S", ppid=7, pgid=40, session=30, start=123456)
    assert procfs.stat(42, fake.path) == ProcStat("S", 7, 40, 30, 123456)


@pytest.mark.parametrize(
    "comm",
    [
        "with space",
        "a) b (c",
        "x) S 1 2 3 (y",  # a name made to look like other fields
        "((",
        "))",
        ")",
        "",
        "tab\there",
    ],
)
def test_stat_command_names_with_spaces_and_parentheses(
    fake: FakeProc, comm: str
) -> None:
    fake.process(42, comm, state="Z", ppid=7, pgid=9, session=8, start=55)
    assert procfs.stat(42, fake.path) == ProcStat("Z", 7, 9, 8, 55)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"42 (ssh)",
        b"42 (ssh) S",
        b"42 (ssh) S 1 2 3",  # cut short before the start time
        b"42 (ssh) S x 2 3 " + b"0 " * 30,  # a parent that is not a number
        b"42 ssh S 1 2 3 " + b"0 " * 30,  # no parentheses at all
        b"\xff\xfe\x00garbage",
    ],
)
def test_a_malformed_stat_is_no_process(fake: FakeProc, content: bytes) -> None:
    (fake.root / "42").mkdir()
    (fake.root / "42" / "stat").write_bytes(content)
    assert procfs.stat(42, fake.path) is None


def test_a_missing_process_is_none(fake: FakeProc) -> None:
    assert procfs.stat(42, fake.path) is None
    (fake.root / "43").mkdir()  # a directory without its stat file
    assert procfs.stat(43, fake.path) is None
    assert procfs.stat(42, str(fake.root / "absent")) is None


def test_a_state_that_is_not_ascii_is_replaced(fake: FakeProc) -> None:
    folder = fake.root / "42"
    folder.mkdir()
    line = stat_line(42, "x").replace(b") S ", b") \xc3 ")
    (folder / "stat").write_bytes(line)
    info = procfs.stat(42, fake.path)
    assert info is not None and info.state == "\ufffd"


def test_stat_of_this_process_matches_what_the_system_says() -> None:
    me = procfs.stat(os.getpid())
    assert me is not None
    assert me.state in "RS"
    assert (me.ppid, me.pgid, me.session) == (os.getppid(), os.getpgrp(), os.getsid(0))
    assert procfs.start_ticks(os.getpid()) == me.start_ticks
    assert procfs.start_ticks(os.getpid()) == procfs.start_ticks(os.getpid())


def test_a_real_process_whose_name_holds_parentheses(procs: Procs) -> None:
    """A process may name itself anything: ``x) S 1 2 3 (y`` is read right."""
    name = "x) S 1 2 3 (y"
    code = (
        f"open('/proc/self/comm', 'w').write({name!r}); print('ok', flush=True); "
        "import sys; sys.stdin.read()"
    )
    p = procs.start(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert read_line(p.stdout) == b"ok\n"
    info = procfs.stat(p.pid)
    assert info is not None
    assert info.ppid == os.getpid() and info.state in "RS"
    assert info.pgid == os.getpgrp()
    assert procfs.comm(p.pid) == name
    assert procfs.exe(p.pid) == os.path.realpath(sys.executable)
    p.stdin.close()  # type: ignore[union-attr]
    assert p.wait(PATIENCE) == 0


# -- argv, comm, exe -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "argv"),
    [
        (b"ssh\0-W\0h:22\0bastion\0", ["ssh", "-W", "h:22", "bastion"]),
        (b"ssh\0-W\0h:22", ["ssh", "-W", "h:22"]),  # no final NUL
        (b"a b\0c\td\0", ["a b", "c\td"]),
        # a rewritten title padded with NULs (setproctitle, sshd)
        (b"sshd: bob [priv]\0\0\0\0\0\0", ["sshd: bob [priv]"]),
        (b"caf\xc3\xa9\0\xff\xfe\0", ["café", "\ufffd\ufffd"]),
        (b"", []),
        (b"\0", []),
    ],
)
def test_argv_splits_at_nul_and_decodes_what_is_not_utf8(
    fake: FakeProc, raw: bytes, argv: list[str]
) -> None:
    fake.process(42, cmdline=raw)
    assert procfs.argv(42, fake.path) == argv


def test_argv_of_a_missing_process_is_empty(fake: FakeProc) -> None:
    assert procfs.argv(42, fake.path) == []
    fake.process(43)  # no cmdline file: unreadable
    assert procfs.argv(43, fake.path) == []


def test_argv_keeps_empty_arguments(fake: FakeProc) -> None:
    """``sshpass -p '' ssh b``: the command line "exactly as it set it"
    (procfs.argv's docstring) keeps an empty argument between two others, as
    the ps and fleet views should show it. (Trailing NULs stay ambiguous:
    a rewritten title is padded with them, so dropping those is right.)"""
    fake.process(42, cmdline=b"sshpass\0-p\0\0ssh\0b\0")
    assert procfs.argv(42, fake.path) == ["sshpass", "-p", "", "ssh", "b"]


def test_argv_of_a_real_process_is_what_it_was_started_with(procs: Procs) -> None:
    argv = ["/bin/sh", "-c", "read x", "a b", "\N{SNOWMAN}", "-p\tx"]
    p = procs.start(argv, stdin=subprocess.PIPE)
    # Until it execs, the child still shows Python's command line.
    assert wait_until(lambda: procfs.argv(p.pid) == argv, PATIENCE), procfs.argv(p.pid)


def test_comm_and_exe_of_missing_processes(fake: FakeProc) -> None:
    assert procfs.comm(42, fake.path) == "?"
    assert procfs.exe(42, fake.path) == ""
    fake.process(43, "my proxy")
    assert procfs.comm(43, fake.path) == "my proxy"


# -- descriptors -----------------------------------------------------------------


def test_fd_target_and_fd_targets_on_a_fake_tree(fake: FakeProc) -> None:
    fds = fake.process(42) / "fd"
    fds.mkdir()
    (fds / "0").symlink_to("/dev/null")
    (fds / "3").symlink_to("pipe:[4242]")
    (fds / "7").symlink_to("socket:[99]")
    (fds / "notanfd").symlink_to("pipe:[1]")  # not a number: ignored
    assert procfs.fd_target(42, 3, fake.path) == "pipe:[4242]"
    assert procfs.fd_target(42, 4, fake.path) == ""  # not open
    assert procfs.fd_target(41, 0, fake.path) == ""  # no such process
    assert procfs.fd_targets(42, fake.path) == {
        "/dev/null",
        "pipe:[4242]",
        "socket:[99]",
    }


def test_fd_targets_of_a_process_without_readable_descriptors(fake: FakeProc) -> None:
    assert procfs.fd_targets(42, fake.path) is None  # no such process
    fake.process(43)  # no fd directory
    assert procfs.fd_targets(43, fake.path) is None
    (fake.process(44) / "fd").mkdir()  # no descriptors at all
    assert procfs.fd_targets(44, fake.path) == set()


def test_fd_target_of_a_real_pipe() -> None:
    r, w = os.pipe()
    try:
        inode = os.fstat(r).st_ino
        assert procfs.fd_target(os.getpid(), r) == f"pipe:[{inode}]"
        assert procfs.fd_target(os.getpid(), w) == f"pipe:[{inode}]"
        targets = procfs.fd_targets(os.getpid())
        assert targets is not None and f"pipe:[{inode}]" in targets
    finally:
        os.close(r)
        os.close(w)


# -- pids, children, descendants ------------------------------------------------


def family(fake: FakeProc) -> None:
    """1 -> 10 -> (11 -> 13, 12); 1 -> 20; 30 is the child of a pid not listed."""
    fake.process(1, "init", ppid=0)
    fake.process(10, "celery worker", ppid=1)
    fake.process(11, "ssh (proxy)", ppid=10)
    fake.process(12, "sh", ppid=10)
    fake.process(13, "ssh) 1 (x", ppid=11)
    fake.process(20, "cron", ppid=1)
    fake.process(30, "orphan", ppid=99)
    (fake.root / "self").symlink_to("10")
    (fake.root / "uptime").write_text("1.0 1.0\n")
    (fake.root / "sys").mkdir()
    (fake.root / "4x").mkdir()


def test_pids_lists_the_numeric_entries(fake: FakeProc) -> None:
    family(fake)
    assert procfs.pids(fake.path) == [1, 10, 11, 12, 13, 20, 30]
    assert procfs.pids(str(fake.root / "absent")) == []


def test_children_maps_parents_to_their_children(fake: FakeProc) -> None:
    family(fake)
    (fake.root / "40").mkdir()  # a process gone while we read: skipped
    assert procfs.children(fake.path) == {
        0: [1],
        1: [10, 20],
        10: [11, 12],
        11: [13],
        99: [30],
    }


def test_descendants_walks_a_fake_tree_parents_first(fake: FakeProc) -> None:
    family(fake)
    # the fake tree's "self" is not this process: it is not ours, and it is
    # still walked, since it is not the real /proc
    assert not procfs.is_ours(fake.path)
    found = procfs.descendants(10, fake.path)
    assert sorted(found) == [11, 12, 13]
    assert found.index(11) < found.index(13)
    assert sorted(procfs.descendants(1, fake.path)) == [10, 11, 12, 13, 20]
    assert procfs.descendants(13, fake.path) == []
    assert procfs.descendants(12345, fake.path) == []
    assert procfs.descendants(10, str(fake.root / "absent")) == []


def test_descendants_in_the_real_proc(procs: Procs) -> None:
    p, grandchild = procs.with_grandchild()
    found = procfs.descendants(os.getpid())
    assert p.pid in found and grandchild in found
    assert found.index(p.pid) < found.index(grandchild)
    assert procfs.descendants(p.pid) == [grandchild]


def test_descendants_refuses_a_real_proc_of_another_namespace(
    procs: Procs, monkeypatch: pytest.MonkeyPatch, fake: FakeProc
) -> None:
    p, grandchild = procs.with_grandchild()
    monkeypatch.setattr(procfs, "is_ours", lambda root=procfs.PROC: False)
    assert procfs.descendants(os.getpid()) == []
    # a tree given by path is walked whatever is_ours says
    family(fake)
    assert sorted(procfs.descendants(10, fake.path)) == [11, 12, 13]


# -- uptime, is_ours --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [("12345.67 890.12\n", 12345.67), ("5 1", 5.0), ("", None), ("soon 1", None)],
)
def test_uptime_on_a_fake_tree(
    fake: FakeProc, content: str, expected: float | None
) -> None:
    (fake.root / "uptime").write_text(content)
    assert procfs.uptime(fake.path) == expected


def test_uptime_missing_and_real(fake: FakeProc) -> None:
    assert procfs.uptime(fake.path) is None
    real = procfs.uptime()
    assert real is not None and real > 0


def test_is_ours_on_fake_roots(fake: FakeProc, tmp_path: Path) -> None:
    assert not procfs.is_ours(fake.path)  # no self link
    (fake.root / "self").symlink_to(str(os.getpid() + 1))
    assert not procfs.is_ours(fake.path)  # another namespace's numbering
    mine = FakeProc(tmp_path / "mine")
    (mine.root / "self").symlink_to(str(os.getpid()))
    assert procfs.is_ours(mine.path)
    assert not procfs.is_ours(str(tmp_path / "absent"))


def test_the_real_proc_is_ours() -> None:
    assert procfs.is_ours()
    assert procfs.is_ours("/proc")
