"""install / uninstall: what is replaced, the originals, the shape check."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

__all__ = ["SUPPORTED", "install", "is_installed", "unsupported_reason", "uninstall"]

log = logging.getLogger("paramiko_proxyfix")

#: paramiko releases whose ProxyCommand and Packetizer this fix knows:
#: from 2.12 (inclusive) up to 6.0 (exclusive).
SUPPORTED = ((2, 12), (6, 0))
SUPPORTED_TEXT = "paramiko >= 2.12, < 6.0"

#: Methods of paramiko.proxy.ProxyCommand replaced by install().
PROXY_METHODS = ("__init__", "send", "recv", "close", "closed", "_closed", "settimeout")
#: Added by install() (upstream has none); removed again by uninstall().
PROXY_ADDED = ("gettimeout",)

_lock = threading.RLock()
_MISSING = object()
#: (class, attribute name) -> what the class itself held before install().
_saved: dict[tuple[type, str], Any] = {}


def _version() -> tuple[int, ...]:
    import paramiko

    info = getattr(paramiko, "__version_info__", None)
    if info:
        return tuple(int(x) for x in info[:2])
    parts = str(getattr(paramiko, "__version__", "0")).split(".")[:2]
    return tuple(int(p) if p.isdigit() else 0 for p in parts)


def unsupported_reason() -> str | None:
    """Why the installed paramiko cannot be patched, or None if it can."""
    try:
        import paramiko
        from paramiko.packet import Packetizer
        from paramiko.proxy import ProxyCommand
    except ImportError as exc:
        return f"paramiko cannot be imported ({exc})"
    version = _version()
    low, high = SUPPORTED
    if not low <= version < high:
        return f"paramiko {paramiko.__version__} is not supported"
    own = vars(ProxyCommand)
    missing = [name for name in PROXY_METHODS if name not in own]
    if not isinstance(own.get("closed"), property):
        missing.append("closed (a property)")
    if "_check_keepalive" not in vars(Packetizer):
        missing.append("Packetizer._check_keepalive")
    if missing:
        return (
            f"paramiko {paramiko.__version__} has an unexpected shape "
            f"(missing: {', '.join(missing)})"
        )
    return None


def _replacements() -> list[tuple[type, str, Any]]:
    from paramiko.packet import Packetizer
    from paramiko.proxy import ProxyCommand

    from .fixed import FixedProxyCommand
    from .readloop import make_check_keepalive

    ours = vars(FixedProxyCommand)
    out: list[tuple[type, str, Any]] = [
        (ProxyCommand, n, ours[n]) for n in PROXY_METHODS + PROXY_ADDED
    ]
    keepalive = vars(Packetizer)["_check_keepalive"]
    out.append((Packetizer, "_check_keepalive", make_check_keepalive(keepalive)))
    return out


def disabled_by_env() -> bool:
    return os.environ.get("PARAMIKO_PROXYFIX_DISABLE", "").strip() not in ("", "0")


def install() -> bool:
    """Patch paramiko in place; True if the fix is (now) installed.

    Leaves paramiko untouched, with a warning, when its shape is unknown, and
    does nothing when ``PARAMIKO_PROXYFIX_DISABLE=1`` is set.
    """
    with _lock:
        if _saved:
            return True
        if disabled_by_env():
            log.info("PARAMIKO_PROXYFIX_DISABLE is set: paramiko left unpatched")
            return False
        reason = unsupported_reason()
        if reason is not None:
            warnings.warn(
                f"paramiko_proxyfix: {reason}; supported: {SUPPORTED_TEXT}. "
                "paramiko was left unpatched.",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        plan = _replacements()
        for cls, name, _ in plan:
            _saved.setdefault((cls, name), vars(cls).get(name, _MISSING))
        for cls, name, new in plan:
            setattr(cls, name, new)
        return True


def uninstall() -> bool:
    """Put back exactly what install() replaced; True if anything was undone."""
    with _lock:
        if not _saved:
            return False
        for (cls, name), original in reversed(list(_saved.items())):
            if original is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        _saved.clear()
        return True


def is_installed() -> bool:
    with _lock:
        return bool(_saved)


def original(cls: type, name: str) -> Any:
    """What ``cls.name`` was before install() (the current value if not patched)."""
    with _lock:
        value = _saved.get((cls, name), vars(cls).get(name, _MISSING))
    if value is _MISSING:
        raise AttributeError(f"{cls.__name__}.{name}")
    return value
