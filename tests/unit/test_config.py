"""Settings: every bound, at the call (configure) and from the environment.

configure() refuses a bad value (ValueError out of bounds, TypeError for a
non-number); the environment never breaks the import: a value out of bounds
is clamped with one RuntimeWarning, a non-number gives the default with one.
The environment is read by calling the module's functions directly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from paramiko.proxy import ProxyCommand

from paramiko_proxyfix import config, registry
from paramiko_proxyfix.config import BOUNDS, DISABLE_ENV, ENV, IDLE_ENV, Settings

pytestmark = pytest.mark.timeout(10)

HOUR = 3600.0
SETTINGS = ["close_timeout", "eof_grace", "stderr_tail"]
DEFAULTS = Settings()


@contextmanager
def recorded() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def runtime_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [*ENV.values(), IDLE_ENV, DISABLE_ENV]:
        monkeypatch.delenv(variable, raising=False)


# -- the bounds themselves ------------------------------------------------------


def test_the_bounds_are_the_documented_ones() -> None:
    assert BOUNDS == {
        "close_timeout": (0.0, HOUR),
        "eof_grace": (0.0, HOUR),
        "stderr_tail": (0, 1 << 20),
        "idle_timeout": (1.0, HOUR),
    }
    assert Settings(close_timeout=0.5, stderr_tail=4096, eof_grace=0.2) == DEFAULTS
    assert set(ENV) == set(SETTINGS)


# -- configure(): checked at the call -------------------------------------------


@pytest.mark.parametrize("name", SETTINGS)
def test_configure_accepts_every_value_within_the_bounds(name: str) -> None:
    low, high = BOUNDS[name]
    whole = name == "stderr_tail"
    middle = 1000 if whole else 2.5
    for value in (low, middle, high):
        value = int(value) if whole else float(value)
        settings = config.configure(**{name: value})
        assert getattr(settings, name) == value
        assert config.current() is settings


@pytest.mark.parametrize("name", SETTINGS)
def test_configure_refuses_values_out_of_bounds(name: str) -> None:
    low, high = BOUNDS[name]
    before = config.current()
    too_low = int(low) - 1 if name == "stderr_tail" else low - 0.001
    too_high = int(high) + 1 if name == "stderr_tail" else high + 0.001
    for value in (too_low, too_high):
        with pytest.raises(ValueError, match=f"{name} must be between"):
            config.configure(**{name: value})
    assert config.current() is before


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_configure_refuses_non_finite_numbers(name: str, value: float) -> None:
    if name == "stderr_tail":  # a float is refused there before its value
        with pytest.raises(TypeError):
            config.configure(**{name: value})
    else:
        with pytest.raises(ValueError, match="finite"):
            config.configure(**{name: value})


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("value", [True, False, "1", None, b"1", [1], 1j])
def test_configure_refuses_values_that_are_not_numbers(name: str, value: Any) -> None:
    before = config.current()
    with pytest.raises(TypeError, match=f"{name} must be a"):
        config.configure(**{name: value})
    assert config.current() is before


def test_a_byte_count_must_be_a_whole_number() -> None:
    with pytest.raises(TypeError, match="whole number"):
        config.configure(stderr_tail=4096.0)


def test_configure_refuses_an_unknown_setting_and_changes_nothing() -> None:
    before = config.current()
    with pytest.raises(TypeError, match="unknown setting.*idle_timeout"):
        config.configure(close_timeout=1.0, idle_timeout=5.0)
    assert config.current() is before


def test_configure_gives_the_fix_its_limits() -> None:
    config.configure(close_timeout=1.25, eof_grace=0.05, stderr_tail=100)
    assert ProxyCommand.close_timeout == 1.25
    assert ProxyCommand.eof_timeout == 0.05
    assert ProxyCommand.stderr_limit == 100
    assert isinstance(config.current().stderr_tail, int)


def test_configure_with_nothing_changes_nothing() -> None:
    assert config.configure() == config.current()


# -- the environment: clamped or default, one warning each -------------------


@pytest.mark.parametrize("name", SETTINGS)
def test_env_values_within_the_bounds_are_used(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV[name], " 7 ")
    with recorded() as caught:
        settings = config._from_env()
    assert runtime_warnings(caught) == []
    assert getattr(settings, name) == 7
    expected = int if name == "stderr_tail" else float
    assert type(getattr(settings, name)) is expected
    # the others keep their defaults
    for other in SETTINGS:
        if other != name:
            assert getattr(settings, other) == getattr(DEFAULTS, other)


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize(("raw", "side"), [("-1", 0), ("1e9", 1), ("-1e-3", 0)])
def test_env_values_out_of_bounds_are_clamped_with_one_warning(
    name: str, raw: str, side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV[name], raw)
    with recorded() as caught:
        settings = config._from_env()
    bound = BOUNDS[name][side]
    assert getattr(settings, name) == bound
    messages = runtime_warnings(caught)
    assert len(messages) == 1, messages
    assert ENV[name] in messages[0]
    assert "out of range" in messages[0]
    assert messages[0].startswith("paramiko_proxyfix: ")


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("raw", ["abc", "1,5", "nan", "inf", "-inf", "0x10", "5s"])
def test_env_values_that_are_not_numbers_give_the_default_with_one_warning(
    name: str, raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV[name], raw)
    with recorded() as caught:
        settings = config._from_env()
    assert getattr(settings, name) == getattr(DEFAULTS, name)
    messages = runtime_warnings(caught)
    assert len(messages) == 1, messages
    assert ENV[name] in messages[0] and "not a number" in messages[0]


@pytest.mark.parametrize("raw", ["", "   "])
def test_empty_env_values_are_unset(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ENV.values():
        monkeypatch.setenv(variable, raw)
    with recorded() as caught:
        assert config._from_env() == DEFAULTS
    assert runtime_warnings(caught) == []


def test_several_bad_env_values_warn_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV["close_timeout"], "99999")
    monkeypatch.setenv(ENV["stderr_tail"], "lots")
    with recorded() as caught:
        settings = config._from_env()
    assert settings == Settings(close_timeout=HOUR, stderr_tail=4096, eof_grace=0.2)
    assert len(runtime_warnings(caught)) == 2


# -- PARAMIKO_PROXYFIX_DISABLE --------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "TRUE", " On ", "YES"])
def test_disable_on(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_ENV, raw)
    with recorded() as caught:
        assert config.disabled_by_env() is True
    assert runtime_warnings(caught) == []


@pytest.mark.parametrize("raw", [None, "", "0", "false", "no", "off", "OFF", " No "])
def test_disable_off(raw: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if raw is not None:
        monkeypatch.setenv(DISABLE_ENV, raw)
    with recorded() as caught:
        assert config.disabled_by_env() is False
    assert runtime_warnings(caught) == []


@pytest.mark.parametrize("raw", ["2", "y", "disable", "enabled", "1.0", "-1"])
def test_disable_anything_else_warns_and_keeps_the_fix(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DISABLE_ENV, raw)
    with recorded() as caught:
        assert config.disabled_by_env() is False
    messages = runtime_warnings(caught)
    assert len(messages) == 1, messages
    assert DISABLE_ENV in messages[0] and "the fix stays on" in messages[0]


# -- the idle timeout: 0 (never) or 1..3600 -------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0.0), (0, 0.0), (0.0, 0.0), (1, 1.0), (1.5, 1.5), (HOUR, HOUR)],
)
def test_check_idle_accepts_zero_or_a_second_to_an_hour(
    value: Any, expected: float
) -> None:
    checked = config.check_idle(value)
    assert checked == expected and type(checked) is float


@pytest.mark.parametrize("value", [0.5, 0.999, -1, HOUR + 0.001, math.nan, math.inf])
def test_check_idle_refuses_other_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        config.check_idle(value)


@pytest.mark.parametrize("value", [True, "60", b"60", [60]])
def test_check_idle_refuses_what_is_not_a_number(value: Any) -> None:
    with pytest.raises(TypeError):
        config.check_idle(value)


def test_set_idle_timeout_checks_before_it_changes_anything() -> None:
    before = registry._idle_timeout
    for bad, error in ((0.5, ValueError), ("60", TypeError), (-1, ValueError)):
        with pytest.raises(error):
            registry.set_idle_timeout(bad)  # type: ignore[arg-type]
        assert registry._idle_timeout == before


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", 1.0), ("30", 30.0), ("3600", HOUR)]
)
def test_env_idle_timeout_within_bounds(
    raw: str, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDLE_ENV, raw)
    with recorded() as caught:
        assert config.env_idle_timeout() == expected
    assert runtime_warnings(caught) == []


def test_env_idle_timeout_unset_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.env_idle_timeout() == 0.0
    assert config.env_idle_timeout(default=60.0) == 60.0
    monkeypatch.setenv(IDLE_ENV, "  ")
    assert config.env_idle_timeout(default=60.0) == 60.0


@pytest.mark.parametrize("raw", ["0", "0.0", " 0 ", "00", "0.00", "-0", "+0", "0e0"])
def test_env_idle_timeout_zero_in_any_spelling_is_never(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zero turns idle closing off, however it is written: ``0.00`` must not
    become a 1 s timeout that closes every proxy between two commands."""
    monkeypatch.setenv(IDLE_ENV, raw)
    with recorded() as caught:
        assert config.env_idle_timeout() == 0.0
    assert runtime_warnings(caught) == []


@pytest.mark.parametrize(("raw", "expected"), [("0.5", 1.0), ("99999", HOUR)])
def test_env_idle_timeout_out_of_bounds_is_clamped_with_one_warning(
    raw: str, expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDLE_ENV, raw)
    with recorded() as caught:
        assert config.env_idle_timeout() == expected
    messages = runtime_warnings(caught)
    assert len(messages) == 1 and IDLE_ENV in messages[0], messages


@pytest.mark.parametrize("raw", ["soon", "nan", "1h"])
def test_env_idle_timeout_not_a_number_is_the_default_with_one_warning(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IDLE_ENV, raw)
    with recorded() as caught:
        assert config.env_idle_timeout(default=0.0) == 0.0
    messages = runtime_warnings(caught)
    assert len(messages) == 1 and "not a number" in messages[0], messages


# -- registry.check_seconds: what close_idle() takes ---------------------------


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (0.001, 0.001), (1e9, 1e9)])
def test_check_seconds_accepts_positive_finite_numbers(
    value: float, expected: float
) -> None:
    assert registry.check_seconds(value) == expected


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf])
def test_check_seconds_refuses_zero_negative_and_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="close_all"):
        registry.check_seconds(value)


@pytest.mark.parametrize("value", [True, None, "5"])
def test_check_seconds_refuses_what_is_not_a_number(value: Any) -> None:
    with pytest.raises(TypeError):
        registry.check_seconds(value)
    with pytest.raises(TypeError):
        registry.close_idle(value)
