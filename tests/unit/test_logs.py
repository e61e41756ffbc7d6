"""The one log line for a proxy's end, and paramiko's ERROR for it made DEBUG.

note_end() logs on ``paramiko_proxyfix``: WARNING (INFO for exit 0), the
command with secrets hidden and control codes escaped, the last stderr line.
QuietProxyEnd turns paramiko's ``Exception (client): ...`` ERROR for that
end, in the same thread, into DEBUG and drops its traceback lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from paramiko_proxyfix import logs
from paramiko_proxyfix.logs import QuietProxyEnd, describe, note_end

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def fresh_thread_state() -> Iterator[None]:
    logs._local.expected = None
    logs._local.swallowing = False
    yield
    logs._local.expected = None
    logs._local.swallowing = False


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="paramiko_proxyfix")
    return caplog


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("paramiko.transport", level, __file__, 1, msg, None, None)


@pytest.mark.parametrize(
    ("code", "known", "text"),
    [
        (0, True, "exited with status 0"),
        (255, True, "exited with status 255"),
        (-9, True, "was killed by SIGKILL"),
        (0, False, "ended; another part of this process collected its exit status"),
        (None, True, "ended; another part of this process collected its exit status"),
    ],
)
def test_describe(code: int | None, known: bool, text: str) -> None:
    assert describe(code, known) == text


def test_a_failed_end_is_one_warning(log: pytest.LogCaptureFixture) -> None:
    argv = ["sshpass", "-p", "s3cret", "ssh", "-W", "h:22", "b"]
    note_end(4242, argv, 255, True, "first\r\nssh: connect: refused\x1b[2J\r\n")
    assert len(log.records) == 1
    line = log.records[0]
    assert (line.name, line.levelno) == ("paramiko_proxyfix", logging.WARNING)
    assert line.getMessage() == (
        "proxy 4242 (sshpass -p *** ssh -W h:22 b) exited with status 255; "
        "stderr: ssh: connect: refused\\x1b[2J"
    )


def test_a_clean_end_is_info(log: pytest.LogCaptureFixture) -> None:
    note_end(1, ["ssh", "b"], 0, True, "")
    assert [(r.levelno, r.getMessage()) for r in log.records] == [
        (logging.INFO, "proxy 1 (ssh b) exited with status 0")
    ]
    assert logs._local.expected is None  # no exception follows an exit 0


def test_an_unknown_end_is_a_warning(log: pytest.LogCaptureFixture) -> None:
    note_end(1, ["ssh", "b"], 0, False, "")
    assert log.records[0].levelno == logging.WARNING
    assert "another part of this process" in log.records[0].getMessage()


def test_control_codes_in_the_command_are_escaped(
    log: pytest.LogCaptureFixture,
) -> None:
    note_end(7, ["ssh", "b\nproxy 8 (forged) exited"], 1, True, "")
    message = log.records[0].getMessage()
    assert "\n" not in message
    assert message.startswith("proxy 7 (ssh b\\nproxy 8 (forged) exited) ")


def test_paramiko_s_error_for_the_end_becomes_debug_and_its_traceback_goes() -> None:
    quiet = QuietProxyEnd()
    note_end(1, ["ssh", "-W", "h:22", "b"], 255, True, "")
    error = record(
        logging.ERROR, 'Exception (client): ProxyCommand("ssh -W h:22 b") exited...'
    )
    assert quiet.filter(error) is True
    assert (error.levelno, error.levelname) == (logging.DEBUG, "DEBUG")
    traceback_line = record(logging.ERROR, "Traceback (most recent call last):")
    assert quiet.filter(traceback_line) is False
    assert quiet.filter(record(logging.ERROR, '  File "x.py", line 1')) is False
    assert quiet.filter(record(logging.INFO, "next")) is True  # the end of it
    later = record(logging.ERROR, "Exception (client): something else")
    assert quiet.filter(later) is True and later.levelno == logging.ERROR


def test_other_errors_pass_unchanged() -> None:
    quiet = QuietProxyEnd()
    note_end(1, ["ssh", "b"], 255, True, "")
    other = record(logging.ERROR, 'Exception (client): ProxyCommand("ssh c") exited')
    assert quiet.filter(other) is True and other.levelno == logging.ERROR
    assert quiet.filter(record(logging.ERROR, "Traceback ...")) is True
    untouched = record(logging.ERROR, "Exception (client): ProxyCommand(...)")
    logs._local.expected = None
    assert quiet.filter(untouched) is True and untouched.levelno == logging.ERROR


def test_quiet_transport_adds_the_filter_once() -> None:
    logger = logging.getLogger(logs.TRANSPORT_LOGGER)
    was_on = logs._filter in logger.filters
    try:
        logs.quiet_transport(True)
        logs.quiet_transport(True)
        assert logger.filters.count(logs._filter) == 1
        logs.quiet_transport(False)
        assert logs._filter not in logger.filters
    finally:
        logs.quiet_transport(was_on)


def test_a_traceback_the_filter_drops_is_not_formatted() -> None:
    # paramiko's transport logs util.tb_strings() after the ERROR line: once
    # the filter swallows that line's traceback, formatting it is skipped.
    import paramiko.util

    def formatted() -> list[str]:
        try:
            raise ValueError("boom")
        except ValueError:
            return paramiko.util.tb_strings()  # type: ignore[no-any-return]

    assert any("ValueError: boom" in line for line in formatted())
    note_end(7, ["ssh", "b"], 255, True, "")
    f = QuietProxyEnd()
    first = 'Exception (client): ProxyCommand("ssh b") x'
    assert f.filter(record(logging.ERROR, first))
    assert formatted() == []
    assert not f.filter(record(logging.ERROR, "Traceback (most recent call last):"))
    f.filter(record(logging.DEBUG, "EOF in transport thread"))
    assert any("ValueError: boom" in line for line in formatted())
