"""Tunable limits: read from the environment without ever failing, changed with checks.

A bad environment value must not break ``import paramiko_proxyfix`` (and so
the process that imports it): it gets one RuntimeWarning naming the variable
and the default used. ``configure()`` refuses bad values at the call.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, fields, replace

__all__ = ["Settings", "configure", "current", "env_seconds"]

#: Setting name -> its environment variable.
ENV = {
    "close_timeout": "PARAMIKO_PROXYFIX_CLOSE_TIMEOUT",
    "stderr_tail": "PARAMIKO_PROXYFIX_STDERR_TAIL",
    "eof_grace": "PARAMIKO_PROXYFIX_EOF_GRACE",
}


@dataclass(frozen=True)
class Settings:
    """Limits applied to every ProxyCommand; see the README for each."""

    #: Seconds close() may spend in all: SIGTERM, then SIGKILL halfway through.
    close_timeout: float = 1.0
    #: Bytes of the proxy's stderr kept for error messages.
    stderr_tail: int = 4096
    #: Seconds to wait, after the proxy's output ends, for its exit status.
    eof_grace: float = 0.2


_DEFAULTS = Settings()


def check(name: str, value: object) -> float | int:
    """``value`` if it is valid for ``name`` (a setting, or seconds of
    something else); TypeError or ValueError otherwise."""
    whole = isinstance(getattr(_DEFAULTS, name, 0.0), int)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if whole and not (numeric and isinstance(value, int)):
        raise TypeError(f"{name} must be a whole number of bytes, not {value!r}")
    if not numeric:
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    assert isinstance(value, (int, float))
    if not 0 <= value < float("inf"):  # also refuses NaN
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return value


def env_seconds(variable: str, default: float) -> float:
    """A number >= 0 from the environment; if it is bad, the default and a warning."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
        if not 0 <= value < float("inf"):
            raise ValueError
    except ValueError:
        warnings.warn(
            f"paramiko_proxyfix: {variable}={raw!r} is not a number >= 0; "
            f"using the default, {default:g}",
            RuntimeWarning,
            stacklevel=2,
        )
        return default
    return value


def _from_env() -> Settings:
    values: dict[str, float | int] = {}
    for f in fields(Settings):
        default = getattr(_DEFAULTS, f.name)
        value = env_seconds(ENV[f.name], default)
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
        return _current
