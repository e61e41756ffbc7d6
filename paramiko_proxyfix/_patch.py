"""install / uninstall: the checks, what is replaced, the originals, the live instances.

- The platform and paramiko's shape are checked before anything is touched;
  a failed check warns once and leaves paramiko alone.
- A paramiko built from ``patches/`` carries this fix as ``paramiko._proxyfix``:
  then nothing is patched, and the package's API works on that copy.
- Originals are saved once (first save wins); ``__init__`` is patched last
  and restored first, so no instance is half-fixed.
- uninstall() pins the fixed methods on each live instance the fix manages:
  its pipes are non-blocking and may hold read-ahead bytes, which upstream's
  methods would mishandle. New instances are upstream's.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import types
import warnings
from typing import Any

__all__ = [
    "SUPPORTED",
    "builtin_fix",
    "install",
    "is_installed",
    "uninstall",
    "unsupported_platform",
    "unsupported_reason",
]

log = logging.getLogger("paramiko_proxyfix")

#: paramiko releases whose ProxyCommand and Packetizer this fix knows:
#: from 2.12 (inclusive) up to 6.0 (exclusive).
SUPPORTED = ((2, 12), (6, 0))
SUPPORTED_TEXT = "paramiko >= 2.12, < 6.0"

#: Methods of paramiko.proxy.ProxyCommand replaced by install(); __init__ last.
PROXY_METHODS = ("send", "recv", "close", "closed", "_closed", "settimeout", "__init__")
#: Added by install() (upstream has none); removed again by uninstall().
PROXY_ADDED = ("gettimeout",)

_lock = threading.RLock()
_MISSING = object()
#: (class, attribute name) -> what the class itself held before install(),
#: in the order install() replaced them.
_saved: dict[tuple[type, str], Any] = {}


def _version() -> tuple[int, ...]:
    import paramiko

    info = getattr(paramiko, "__version_info__", None)
    if info:
        return tuple(int(x) for x in info[:2])
    parts = str(getattr(paramiko, "__version__", "0")).split(".")[:2]
    return tuple(int(p) if p.isdigit() else 0 for p in parts)


def unsupported_platform() -> str | None:
    """Why the fix cannot run on this Python, or None if it can."""
    if os.name != "posix":
        return f"{sys.platform} is not a POSIX system"
    for module in ("fcntl", "subprocess"):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"this Python has no {module} module"
    import select

    # eventlet removes poll(); its green select() rides on the hub instead.
    green = getattr(select.select, "__module__", "select") != "select"
    if not hasattr(select, "poll") and not green:
        return "this Python has no select.poll"
    return None


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


def builtin_fix() -> types.ModuleType | None:
    """``paramiko._proxyfix`` when paramiko was built from patches/ and it is
    active, else None. Never the package this module belongs to."""
    if __name__.startswith("paramiko."):
        return None
    try:
        builtin = importlib.import_module("paramiko._proxyfix._patch")
    except ImportError:
        return None
    active: bool = builtin.is_installed()
    return sys.modules["paramiko._proxyfix"] if active else None


def _replacements() -> list[tuple[type, str, Any]]:
    from paramiko.packet import Packetizer
    from paramiko.proxy import ProxyCommand

    from .fixed import FixedProxyCommand
    from .readloop import make_check_keepalive

    ours = vars(FixedProxyCommand)
    keepalive = vars(Packetizer)["_check_keepalive"]
    plan: list[tuple[type, str, Any]] = [
        (Packetizer, "_check_keepalive", make_check_keepalive(keepalive))
    ]
    plan += [(ProxyCommand, n, ours[n]) for n in PROXY_ADDED + PROXY_METHODS]
    return plan


def disabled_by_env() -> bool:
    return os.environ.get("PARAMIKO_PROXYFIX_DISABLE", "").strip() not in ("", "0")


def install(*, warn: bool = True, _stacklevel: int = 2) -> bool:
    """Patch paramiko in place; True if the fix is (now) active.

    Leaves paramiko untouched, with a warning (unless ``warn`` is false), when
    the platform or paramiko's shape is unknown, and does nothing when
    ``PARAMIKO_PROXYFIX_DISABLE=1`` is set.
    """
    with _lock:
        if _saved:
            return True
        if builtin_fix() is not None:
            return True  # paramiko carries the fix already
        if disabled_by_env():
            log.info("PARAMIKO_PROXYFIX_DISABLE is set: paramiko left unpatched")
            return False
        reason = unsupported_platform() or unsupported_reason()
        if reason is not None:
            if not warn:
                return False
            warnings.warn(
                f"paramiko_proxyfix: {reason}; supported: {SUPPORTED_TEXT} on "
                "Linux or another POSIX system. paramiko was left unpatched.",
                RuntimeWarning,
                stacklevel=_stacklevel,
            )
            return False
        from . import fixed, logs

        plan = _replacements()
        for cls, name, _ in plan:
            _saved.setdefault((cls, name), vars(cls).get(name, _MISSING))
            if cls.__name__ == "ProxyCommand" and name in vars(cls):
                fixed.UPSTREAM.setdefault(name, vars(cls)[name])
        for cls, name, new in plan:
            setattr(cls, name, new)
        logs.quiet_transport(True)
        return True


def uninstall() -> bool:
    """Put back exactly what install() replaced; True if anything was undone.

    Instances made while the fix was installed keep working until closed.
    """
    with _lock:
        if not _saved:
            return False
        from . import logs
        from .fixed import PINNED, FixedProxyCommand
        from .registry import live

        items = list(_saved.items())
        for (cls, name), original in items:
            if name == "__init__":
                _restore(cls, name, original)
        # __init__ is back: no new fixed instance can appear from here on.
        _pin_live(live(), PINNED, vars(FixedProxyCommand))
        for (cls, name), original in reversed(items):
            if name != "__init__":
                _restore(cls, name, original)
        _saved.clear()
        logs.quiet_transport(False)
        return True


def _restore(cls: type, name: str, original: Any) -> None:
    if original is _MISSING:
        delattr(cls, name)
    else:
        setattr(cls, name, original)


def _pin_live(states: list[Any], names: tuple[str, ...], ours: Any) -> None:
    """Give each live managed instance our methods of its own."""
    for state in states:
        proxy = state.proxy_ref()
        if proxy is None:
            continue
        for name in names:
            if getattr(type(proxy), name, None) is ours[name]:
                proxy.__dict__[name] = types.MethodType(ours[name], proxy)


def is_installed() -> bool:
    """Whether the fix is active: patched by install(), or built into paramiko."""
    with _lock:
        return bool(_saved) or builtin_fix() is not None
