"""Command lines: how ProxyCommand splits one, and what the logs show of one.

ProxyCommand splits with ``shlex`` and runs no shell; a non-string is a
TypeError, unbalanced quotes the ValueError upstream raised, an empty line a
ProxyCommandStartError, a missing or non-executable program the start errors
that are also FileNotFoundError / PermissionError. ``redact()`` hides the
password-like values of a command line, and ``printable()`` escapes control
codes, for the log lines and the fleet view.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Callable

import pytest
from paramiko.proxy import ProxyCommand

from paramiko_proxyfix import (
    ProxyCommandNotFound,
    ProxyCommandNotPermitted,
    ProxyCommandStartError,
    execcheck,
)
from paramiko_proxyfix.redact import HIDDEN, printable, redact

pytestmark = pytest.mark.timeout(20)

OpenProxy = Callable[[str], ProxyCommand]


def read_all(proxy: ProxyCommand) -> bytes:
    """Everything the proxy writes, up to its end of output."""
    out = b""
    while True:
        data = proxy.recv(4096)
        if not data:
            return out
        out += data


# -- splitting: shlex, no shell -------------------------------------------------


def test_words_are_split_as_shlex_does_and_no_shell_runs(
    open_proxy: OpenProxy,
) -> None:
    line = "printf '%s|' 'a b' \"c d\" '$HOME' ';' '|' `x` e\\ f"
    proxy = open_proxy(line)
    argv = ["printf", "%s|", "a b", "c d", "$HOME", ";", "|", "`x`", "e f"]
    assert proxy.cmd == argv
    assert proxy.process.args == argv  # what Popen ran, not setpriv's line
    # A shell would have expanded $HOME and `x` and split at ; and |.
    assert read_all(proxy) == b"a b|c d|$HOME|;|||`x`|e f|"


@pytest.mark.parametrize("bad", [None, b"cat", ["cat"], 42])
def test_a_command_line_that_is_not_a_string_is_a_type_error(bad: Any) -> None:
    # shlex.split(None) would read the program's stdin: refused first.
    with pytest.raises(TypeError, match="command_line must be a str"):
        ProxyCommand(bad)


@pytest.mark.parametrize("line", ["cat 'x", 'cat "x', "cat x\\"])
def test_unbalanced_quotes_are_the_value_error_upstream_raised(line: str) -> None:
    with pytest.raises(ValueError):
        ProxyCommand(line)


@pytest.mark.parametrize("line", ["", "   ", "\t\n"])
def test_an_empty_command_line_is_a_start_error(line: str) -> None:
    with pytest.raises(ProxyCommandStartError) as caught:
        ProxyCommand(line)
    error = caught.value
    assert type(error) is ProxyCommandStartError
    assert isinstance(error, OSError)
    assert error.command == ""
    assert "empty" in str(error)


def test_a_missing_program_is_not_found(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-proxy")
    with pytest.raises(ProxyCommandNotFound) as caught:
        ProxyCommand(f"{missing} -W host:22")
    error = caught.value
    assert isinstance(error, FileNotFoundError)
    assert error.errno == errno.ENOENT
    assert error.filename == missing
    assert error.command == f"{missing} -W host:22"
    assert str(error).startswith(f'ProxyCommand("{missing} -W host:22") could not')


def test_a_program_missing_from_path_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProxyCommandNotFound) as caught:
        ProxyCommand("no-such-proxy-anywhere")
    assert caught.value.errno == errno.ENOENT


@pytest.mark.parametrize("kind", ["not executable", "a directory"])
def test_a_program_that_cannot_run_is_not_permitted(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "proxy"
    if kind == "a directory":
        target.mkdir()
    else:
        target.write_text("#!/bin/sh\nexit 0\n")
        target.chmod(0o644)
    with pytest.raises(ProxyCommandNotPermitted) as caught:
        ProxyCommand(str(target))
    assert isinstance(caught.value, PermissionError)
    assert caught.value.errno == errno.EACCES


def test_a_file_exec_refuses_is_a_plain_start_error(tmp_path: Path) -> None:
    if execcheck._binfmt_misc_in_use():
        pytest.skip("binfmt_misc handlers may run any file here")
    target = tmp_path / "proxy"
    target.write_text("echo this must not run in a shell\n")  # no #! line
    target.chmod(0o755)
    with pytest.raises(ProxyCommandStartError) as caught:
        ProxyCommand(str(target))
    error = caught.value
    assert type(error) is ProxyCommandStartError
    assert error.errno == errno.ENOEXEC


# -- redact(): what the logs and the fleet view show ---------------------------

REDACTED = [
    # sshpass's own -p, separate or attached; the path does not matter
    (
        ["sshpass", "-p", "s3cret", "ssh", "-W", "h:22", "b"],
        "sshpass -p *** ssh -W h:22 b",
    ),
    (["sshpass", "-ps3cret", "ssh", "b"], "sshpass -p*** ssh b"),
    (
        ["/usr/bin/sshpass", "-v", "-p", "s3cret", "ssh", "b"],
        "/usr/bin/sshpass -v -p *** ssh b",
    ),
    # after sshpass's options end, -p is the program's (ssh's port)
    (["sshpass", "-e", "ssh", "-p", "2222", "b"], "sshpass -e ssh -p 2222 b"),
    (["sshpass", "-p", "x", "ssh", "-p2222", "b"], "sshpass -p *** ssh -p2222 b"),
    # -p of any other program is left alone
    (["ssh", "-p", "2222", "-W", "h:22", "b"], "ssh -p 2222 -W h:22 b"),
    (["nc", "-pfoo", "h", "22"], "nc -pfoo h 22"),
    # long options: --password VALUE and --name=VALUE, any case
    (["proxy", "--password", "s3cret", "h"], "proxy --password *** h"),
    (["proxy", "--PASSWORD", "s3cret", "h"], "proxy --PASSWORD *** h"),
    (["proxy", "--api-token", "abc", "h"], "proxy --api-token *** h"),
    (["proxy", "--token=abc", "h"], "proxy --token=*** h"),
    (["proxy", "--client-secret=abc"], "proxy --client-secret=***"),
    (["proxy", "--credentials=a=b"], "proxy --credentials=***"),
    (["proxy", "--port", "22", "--user=bob"], "proxy --port 22 --user=bob"),
    # ssh -o settings, separate or attached
    (["ssh", "-o", "ProxyPassword=x", "b"], "ssh -o ProxyPassword=*** b"),
    (["ssh", "-oProxyPassword=x", "b"], "ssh -oProxyPassword=*** b"),
    (["ssh", "-oPort=22", "-o", "User=bob", "b"], "ssh -oPort=22 -o User=bob b"),
    # NAME=value words (env VAR=... proxy)
    (
        ["env", "SSHPASS=s3cret", "sshpass", "-e", "ssh"],
        "env SSHPASS=*** sshpass -e ssh",
    ),
    (
        ["env", "API_KEY=a", "MY_APIKEY=b", "HOME=/root"],
        "env API_KEY=*** MY_APIKEY=*** HOME=/root",
    ),
    (["env", "GITHUB_TOKEN=t", "x"], "env GITHUB_TOKEN=*** x"),
    # the password of a URL, wherever the URL is
    (["proxy", "http://bob:pw@h:3128"], "proxy http://bob:***@h:3128"),
    (["proxy", "--proxy=socks5h://bob:p:w@h"], "proxy --proxy=socks5h://bob:***@h"),
    (["proxy", "-x", "https://:pw@h/path"], "proxy -x https://:***@h/path"),
    (["proxy", "http://bob@h", "http://h/a:b@c"], "proxy http://bob@h http://h/a:b@c"),
    # nothing secret: unchanged
    (["ssh", "-W", "%h:%p", "bastion"], "ssh -W %h:%p bastion"),
    ([], ""),
]


@pytest.mark.parametrize(("argv", "shown"), REDACTED)
def test_redact_hides_secret_values(argv: list[str], shown: str) -> None:
    assert redact(argv) == shown


def test_redact_hides_the_value_of_sshpass_p_after_an_option_with_an_argument() -> None:
    """sshpass -P PROMPT -p PASSWORD: -p is still one of sshpass's own options
    (its -P, -f and -d take an argument), so the password must be hidden."""
    shown = redact(["sshpass", "-P", "assword:", "-p", "s3cret", "ssh", "b"])
    assert "s3cret" not in shown


@pytest.mark.parametrize(
    "launcher",
    [["setsid"], ["timeout", "30"], ["env", "LC_ALL=C"], ["nice"]],
    ids=["setsid", "timeout", "env", "nice"],
)
def test_redact_hides_the_sshpass_password_behind_a_launcher(
    launcher: list[str],
) -> None:
    """``timeout 30 sshpass -p PASSWORD ssh ...``: the -p is sshpass's own
    option there too, and its value the same password."""
    shown = redact([*launcher, "sshpass", "-p", "s3cret", "ssh", "-W", "h:22", "b"])
    assert "s3cret" not in shown


def test_hidden_values_are_three_stars() -> None:
    assert HIDDEN == "***"
    assert redact(["proxy", "--password", "x"]).endswith(" " + HIDDEN)


def test_redact_hides_nothing_when_a_secret_option_ends_the_line() -> None:
    assert redact(["proxy", "--password"]) == "proxy --password"
    assert redact(["sshpass", "-p"]) == "sshpass -p"


def test_redact_takes_a_list_and_leaves_it_unchanged() -> None:
    argv = ["sshpass", "-p", "s3cret", "ssh"]
    redact(argv)
    assert argv == ["sshpass", "-p", "s3cret", "ssh"]


# -- printable() ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text", "plain text"),
        ("héllo wörld ✓", "héllo wörld ✓"),
        ("a\nb", "a\\nb"),
        ("a\r\nforged: line", "a\\r\\nforged: line"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("tab\there", "tab\\there"),
        ("nul\x00", "nul\\x00"),
        ("\u2028sep", "\\u2028sep"),
        ("", ""),
    ],
)
def test_printable_escapes_control_codes(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).isprintable()


def test_printable_returns_printable_text_itself() -> None:
    text = "nothing to escape"
    assert printable(text) is text
