"""Limits and switches: from the environment without ever failing; checked changes.

A bad environment value must not break ``import paramiko_proxyfix`` (and so
the process that imports it): it gets one RuntimeWarning naming the variable
and what is used instead. Every limit has bounds (:data:`BOUNDS`): a value
outside them warns and uses the bound; one that is not a finite number warns
and uses the default. ``configure()`` refuses bad values at the call.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from dataclasses import dataclass, fields, replace

__all__ = [
    "BOUNDS",
    "DISABLE_ENV",
    "IDLE_ENV",
    "Settings",
    "check",
    "check_idle",
    "configure",
    "current",
    "disabled_by_env",
    "env_idle_timeout",
]

DISABLE_ENV = "PARAMIKO_PROXYFIX_DISABLE"
IDLE_ENV = "PARAMIKO_PROXYFIX_IDLE_TIMEOUT"
#: Setting name -> its environment variable.
ENV = {
    "close_timeout": "PARAMIKO_PROXYFIX_CLOSE_TIMEOUT",
    "stderr_tail": "PARAMIKO_PROXYFIX_STDERR_TAIL",
    "eof_grace": "PARAMIKO_PROXYFIX_EOF_GRACE",
}
HOUR = 3600.0
#: Setting name -> (lowest, highest) value accepted.
BOUNDS: dict[str, tuple[float, float]] = {
    "close_timeout": (0.0, HOUR),
    "eof_grace": (0.0, HOUR),
    "stderr_tail": (0, 1 << 20),
    # 0 turns it off; below a second it would close proxies between packets.
    "idle_timeout": (1.0, HOUR),
}
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Settings:
    """Limits applied to every ProxyCommand; see docs/api.md for each."""

    #: Seconds close() waits after SIGTERM before SIGKILL (and after SIGKILL).
    close_timeout: float = 0.5
    #: Bytes of the proxy's stderr kept for error messages.
    stderr_tail: int = 4096
    #: Seconds to wait, after the proxy's output ends, for its exit status.
    eof_grace: float = 0.2


_DEFAULTS = Settings()


def _number(name: str, value: object, whole: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if whole and not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number of bytes, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return value


def check(name: str, value: object) -> float | int:
    """``value`` if it is valid for setting ``name``; TypeError or ValueError."""
    whole = isinstance(getattr(_DEFAULTS, name), int)
    number = _number(name, value, whole)
    low, high = BOUNDS[name]
    if not low <= number <= high:
        raise ValueError(
            f"{name} must be between {_num(low)} and {_num(high)}, not {value!r}"
        )
    return int(number) if whole else number


def check_idle(seconds: object) -> float:
    """An idle timeout: 0 (or None) for never, else within BOUNDS."""
    if seconds is None:
        return 0.0
    value = _number("idle timeout", seconds, False)
    low, high = BOUNDS["idle_timeout"]
    if value != 0 and not low <= value <= high:
        raise ValueError(
            f"an idle timeout is 0 (never) or {_num(low)} to {_num(high)} seconds, "
            f"not {seconds!r}"
        )
    return float(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _warn(message: str) -> None:
    warnings.warn(f"paramiko_proxyfix: {message}", RuntimeWarning, stacklevel=3)


def _env(variable: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        _warn(f"{variable}={raw!r} is not a number; using the default, {_num(default)}")
        return default
    if not low <= value <= high:
        bound = low if value < low else high
        _warn(
            f"{variable}={raw!r} is out of range ({_num(low)} to {_num(high)}); "
            f"using {_num(bound)}"
        )
        return bound
    return value


def env_idle_timeout(default: float = 0.0) -> float:
    """The idle timeout from PARAMIKO_PROXYFIX_IDLE_TIMEOUT (0: never)."""
    raw = os.environ.get(IDLE_ENV, "").strip()
    try:
        if float(raw) == 0:  # "0", "0.0", "-0", "0e0": never
            return 0.0
    except ValueError:
        pass
    low, high = BOUNDS["idle_timeout"]
    return _env(IDLE_ENV, default, low, high) if raw else default


def disabled_by_env() -> bool:
    """PARAMIKO_PROXYFIX_DISABLE: on for 1/true/yes/on, off for 0/false/no/off
    or unset (any case); anything else warns and keeps the fix."""
    raw = os.environ.get(DISABLE_ENV, "").strip().lower()
    if raw in _ON:
        return True
    if raw not in _OFF:
        _warn(
            f"{DISABLE_ENV}={raw!r} is neither 1/true/yes/on nor 0/false/no/off; "
            "the fix stays on"
        )
    return False


def _from_env() -> Settings:
    values: dict[str, float | int] = {}
    for f in fields(Settings):
        default = getattr(_DEFAULTS, f.name)
        value = _env(ENV[f.name], default, *BOUNDS[f.name])
        values[f.name] = int(value) if isinstance(default, int) else value
    return Settings(**values)  # type: ignore[arg-type]


_lock = threading.Lock()
_current = _from_env()


def current() -> Settings:
    return _current


def configure(**changes: float) -> Settings:
    """Change the limits for proxies started or closed from now on."""
    global _current
    known = {f.name for f in fields(Settings)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    checked = {name: check(name, value) for name, value in changes.items()}
    with _lock:
        _current = replace(_current, **checked)  # type: ignore[arg-type]
    from . import _patch  # the fix reads them from ProxyCommand's attributes

    _patch.apply_settings()
    return _current
