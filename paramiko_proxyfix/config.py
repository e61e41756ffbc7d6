"""Tunable limits, read once from the environment and changeable at run time."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields, replace

__all__ = ["Settings", "configure", "current"]


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must not be negative")
    return value


@dataclass(frozen=True)
class Settings:
    """Limits applied to every ProxyCommand; see the README for each."""

    #: Seconds close() may spend in all: SIGTERM, then SIGKILL halfway through.
    close_timeout: float = 1.0
    #: Bytes of the proxy's stderr kept for error messages.
    stderr_tail: int = 4096
    #: Seconds to wait, after the proxy's output ends, for its exit status.
    eof_grace: float = 0.2

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            close_timeout=_env_float("PARAMIKO_PROXYFIX_CLOSE_TIMEOUT", 1.0),
            stderr_tail=int(_env_float("PARAMIKO_PROXYFIX_STDERR_TAIL", 4096)),
        )


_lock = threading.Lock()
_current = Settings.from_env()


def current() -> Settings:
    return _current


def configure(**changes: float) -> Settings:
    """Change the limits for proxies started or closed from now on."""
    global _current
    known = {f.name for f in fields(Settings)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, not {value!r}")
    with _lock:
        _current = replace(_current, **changes)  # type: ignore[arg-type]
        return _current
