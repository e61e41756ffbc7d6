"""Exception shapes: classes, args, str(), and rebuilding from args or a pickle.

Every exception's ``args`` are its constructor's arguments, so pickle (and
Celery's JSON result backend, which calls ``type(e)(*e.args)``) rebuilds type
and attributes. ProxyCommandExited is also an EOFError; the start errors are
OSErrors, FileNotFoundError and PermissionError for the two usual causes.
"""

from __future__ import annotations

import copy
import errno
import os
import pickle
import signal

import paramiko
import pytest
from paramiko.ssh_exception import ProxyCommandFailure, SSHException

import paramiko_proxyfix
from paramiko_proxyfix import (
    ProxyCommandClosed,
    ProxyCommandExited,
    ProxyCommandForeign,
    ProxyCommandNotFound,
    ProxyCommandNotPermitted,
    ProxyCommandStartError,
    errors,
)
from paramiko_proxyfix.upstream import ssh_exception as upstream

pytestmark = pytest.mark.timeout(10)

#: A signal number Python has no name for (a real-time signal).
UNNAMED = next(n for n in range(1, 65) if n not in {int(s) for s in signal.Signals})

EXAMPLES = [
    ProxyCommandExited("ssh -W h:22 b", 255, "ssh: connect to host b: refused\r\n"),
    ProxyCommandExited("ssh -W h:22 b", -9, ""),
    ProxyCommandExited("ssh -W h:22 b", -UNNAMED, "x"),
    ProxyCommandExited("ssh -W h:22 b", 0),
    ProxyCommandClosed("ssh -W h:22 b"),
    ProxyCommandClosed("ssh -W h:22 b", "belongs to process 1"),
    ProxyCommandStartError("", "the command line is empty"),
    ProxyCommandStartError("x y", "No such device", errno.ENODEV, "x"),
    ProxyCommandNotFound("nope -W h:22", "No such file", errno.ENOENT, "nope"),
    ProxyCommandNotPermitted("./p", "Permission denied", errno.EACCES, "./p"),
]
IDS = [f"{type(e).__name__}-{i}" for i, e in enumerate(EXAMPLES)]


def same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert a.args == b.args
    assert str(a) == str(b)
    assert vars(a) == vars(b)
    if isinstance(a, OSError):
        assert isinstance(b, OSError)
        assert (a.errno, a.strerror, a.filename) == (b.errno, b.strerror, b.filename)


# -- classes ---------------------------------------------------------------------


def test_the_class_relations() -> None:
    assert issubclass(ProxyCommandExited, ProxyCommandFailure)
    assert issubclass(ProxyCommandExited, EOFError)
    assert issubclass(ProxyCommandClosed, ProxyCommandFailure)
    assert not issubclass(ProxyCommandClosed, EOFError)
    assert ProxyCommandForeign is ProxyCommandClosed
    for cls in (ProxyCommandStartError, ProxyCommandNotFound, ProxyCommandNotPermitted):
        assert issubclass(cls, ProxyCommandFailure)
        assert issubclass(cls, SSHException)
        assert issubclass(cls, OSError)
    assert issubclass(ProxyCommandNotFound, ProxyCommandStartError)
    assert issubclass(ProxyCommandNotFound, FileNotFoundError)
    assert issubclass(ProxyCommandNotPermitted, ProxyCommandStartError)
    assert issubclass(ProxyCommandNotPermitted, PermissionError)
    assert not issubclass(ProxyCommandNotFound, PermissionError)
    assert not issubclass(ProxyCommandNotPermitted, FileNotFoundError)


@pytest.mark.unpatched
def test_the_fix_s_exceptions_live_in_paramiko_ssh_exception() -> None:
    """install() puts them where a paramiko built from patches/ has them, so
    pickles name one place in both kinds of process."""
    from paramiko import ssh_exception

    assert paramiko_proxyfix.is_installed()
    assert errors.ProxyCommandExited is upstream.ProxyCommandExited
    assert ssh_exception.ProxyCommandExited is ProxyCommandExited
    assert ssh_exception.ProxyCommandClosed is ProxyCommandClosed
    assert paramiko.ProxyCommandExited is ProxyCommandExited  # type: ignore[attr-defined]
    assert ProxyCommandExited.__module__ == "paramiko.ssh_exception"
    assert b"paramiko.ssh_exception" in pickle.dumps(ProxyCommandExited("c", 1))


# -- args, str() ------------------------------------------------------------------


def test_exited_args_and_attributes() -> None:
    e = ProxyCommandExited("ssh -W h:22 b", 255, "no route\n")
    assert e.args == ("ssh -W h:22 b", 255, "no route\n")
    assert (e.command, e.returncode, e.stderr_tail) == (
        "ssh -W h:22 b",
        255,
        "no route\n",
    )
    assert e.signal_name is None
    assert e.error == "exited with status 255; stderr: no route"
    assert (
        str(e)
        == 'ProxyCommand("ssh -W h:22 b") exited with status 255; stderr: no route'
    )
    assert ProxyCommandExited("c", 1).args == ("c", 1, "")


def test_exited_by_a_named_signal() -> None:
    e = ProxyCommandExited("ssh b", -9, "")
    assert e.signal_name == "SIGKILL"
    assert str(e) == 'ProxyCommand("ssh b") was killed by SIGKILL'
    assert ProxyCommandExited("ssh b", -int(signal.SIGTERM)).signal_name == "SIGTERM"


def test_exited_by_a_signal_without_a_name() -> None:
    e = ProxyCommandExited("ssh b", -UNNAMED, "")
    assert e.signal_name == f"signal {UNNAMED}"
    assert str(e) == f'ProxyCommand("ssh b") was killed by signal {UNNAMED}'
    assert ProxyCommandExited("c", -200).signal_name == "signal 200"


@pytest.mark.parametrize(
    ("tail", "shown"),
    [
        ("", ""),
        ("  \r\n\n", ""),
        ("line one\r\nline two\r\n", "; stderr: line one\nline two"),
        ("\n  padded  \n", "; stderr: padded"),
    ],
)
def test_exited_shows_the_stderr_tail_trimmed(tail: str, shown: str) -> None:
    e = ProxyCommandExited("c", 3, tail)
    assert str(e) == f'ProxyCommand("c") exited with status 3{shown}'
    assert e.stderr_tail == tail  # kept as it came


def test_exited_with_status_zero() -> None:
    assert str(ProxyCommandExited("c", 0)) == 'ProxyCommand("c") exited with status 0'


def test_closed_args_and_str() -> None:
    e = ProxyCommandClosed("ssh b")
    assert e.args == ("ssh b", "was closed")
    assert (e.command, e.error) == ("ssh b", "was closed")
    assert str(e) == 'ProxyCommand("ssh b") was closed'
    e = ProxyCommandClosed("ssh b", "belongs to process 12")
    assert e.args == ("ssh b", "belongs to process 12")
    assert str(e) == 'ProxyCommand("ssh b") belongs to process 12'


def test_start_error_args_and_os_error_fields() -> None:
    e = ProxyCommandStartError("x -W h", "Exec format error: 'x'", errno.ENOEXEC, "x")
    assert e.args == ("x -W h", "Exec format error: 'x'", errno.ENOEXEC, "x")
    assert (e.command, e.error) == ("x -W h", "Exec format error: 'x'")
    assert (e.errno, e.strerror, e.filename) == (errno.ENOEXEC, e.error, "x")
    assert str(e) == "ProxyCommand(\"x -W h\") could not start: Exec format error: 'x'"
    bare = ProxyCommandStartError("", "the command line is empty")
    assert bare.args == ("", "the command line is empty", None, None)
    assert (bare.errno, bare.filename) == (None, None)
    assert str(bare) == 'ProxyCommand("") could not start: the command line is empty'


@pytest.mark.parametrize(
    ("number", "cls"),
    [
        (errno.ENOENT, ProxyCommandNotFound),
        (errno.EACCES, ProxyCommandNotPermitted),
        (errno.EPERM, ProxyCommandNotPermitted),
        (errno.ENOEXEC, ProxyCommandStartError),
        (errno.E2BIG, ProxyCommandStartError),
        (errno.EMFILE, ProxyCommandStartError),
    ],
)
def test_for_errno_picks_the_class_oserror_would(number: int, cls: type) -> None:
    e = ProxyCommandStartError.for_errno("prog -x", number, "prog")
    assert type(e) is cls
    assert type(OSError(number, "x")) in cls.__mro__
    assert e.errno == number and e.filename == "prog"
    assert e.error == f"{os.strerror(number)}: 'prog'"
    assert str(e) == f'ProxyCommand("prog -x") could not start: {e.error}'


def test_start_errors_are_caught_as_upstream_s_were() -> None:
    with pytest.raises(FileNotFoundError):
        raise ProxyCommandStartError.for_errno("p", errno.ENOENT, "p")
    with pytest.raises(PermissionError):
        raise ProxyCommandStartError.for_errno("p", errno.EACCES, "p")
    with pytest.raises(SSHException):
        raise ProxyCommandStartError.for_errno("p", errno.ENOEXEC, "p")
    with pytest.raises(EOFError):
        raise ProxyCommandExited("p", 1)


# -- rebuilding: pickle, copy, type(e)(*e.args) ---------------------------------


@pytest.mark.parametrize("error", EXAMPLES, ids=IDS)
def test_rebuilt_from_args(error: BaseException) -> None:
    same(error, type(error)(*error.args))


@pytest.mark.parametrize("error", EXAMPLES, ids=IDS)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_round_trip(error: BaseException, protocol: int) -> None:
    same(error, pickle.loads(pickle.dumps(error, protocol)))


@pytest.mark.parametrize("error", EXAMPLES, ids=IDS)
def test_copies(error: BaseException) -> None:
    same(error, copy.copy(error))
    same(error, copy.deepcopy(error))


def test_a_rebuilt_exception_keeps_attributes_set_later() -> None:
    e = ProxyCommandExited("c", 1, "tail")
    e.owner_pid = 42  # type: ignore[attr-defined]
    rebuilt = pickle.loads(pickle.dumps(e))
    assert rebuilt.owner_pid == 42
    assert vars(rebuilt) == vars(e)
