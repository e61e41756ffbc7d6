"""install / uninstall: the checks, the plan, the originals, the live instances.

- The platform and paramiko's version and shape are checked before anything
  is touched; a failed check warns once and leaves paramiko alone.
- A paramiko built from ``patches/`` carries the fix in its own ``proxy.py``:
  install() puts only the worker extras (hooks.py) on its override points.
  An unpatched one gets the fix first (``upstream/proxy.py``); an instance
  made before install() keeps upstream's behaviour (pinning.py). Either way
  ``Packetizer.__init__`` is wrapped (readloop.py), the limits become the
  fix's class attributes, and paramiko's transport logger gets the quiet
  filter (and ``util.tb_strings`` skips the traceback the filter drops).
- The fix's exceptions go into ``paramiko.ssh_exception`` (and ``paramiko``)
  under their names, as a patched paramiko has them, so pickles and Celery
  results name one place in both kinds of process.
- Originals are saved once (first save wins) and put back in reverse order;
  ``__init__`` is patched last and restored first, so no instance is made
  half-fixed. uninstall() moves each live instance the fix manages to a
  subclass that keeps the fix's methods and properties (pinning.py). New
  instances are upstream's.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import warnings
from typing import Any

from .config import disabled_by_env

__all__ = [
    "SUPPORTED",
    "SUPPORTED_TEXT",
    "apply_settings",
    "install",
    "is_built_in",
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

#: Upstream's ProxyCommand methods the fix replaces; __init__ goes last.
PUBLIC = ("send", "recv", "close", "closed", "_closed", "settimeout")
#: The fix's override points, which a patched paramiko has.
HOOKS = ("_spawn", "_signal", "_wait", "_read", "_write", "_on_started")
#: The fix's exceptions.
EXCEPTIONS = ("ProxyCommandExited", "ProxyCommandClosed")

_lock = threading.RLock()
_MISSING = object()
#: (object, attribute name) -> what the object itself held before install(),
#: in the order install() replaced them.
_saved: dict[tuple[Any, str], Any] = {}
#: What install() put there, by the same keys.
_put: dict[tuple[Any, str], Any] = {}
#: The fix's own functions, by name (an unpatched paramiko only).
_fixed: dict[str, Any] = {}
#: For PUBLIC names: methods that pick the fix's or upstream's per instance.
_choosing: dict[str, Any] = {}


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


def is_built_in() -> bool:
    """Whether paramiko carries the fix itself (built from patches/)."""
    try:
        from paramiko.proxy import ProxyCommand
    except ImportError:
        return False
    with _lock:
        before = _saved.get((ProxyCommand, "_spawn"), vars(ProxyCommand).get("_spawn"))
    return before is not None and before is not _MISSING


def unsupported_reason() -> str | None:
    """Why the installed paramiko cannot be patched, or None if it can."""
    try:
        import paramiko
        from paramiko.packet import Packetizer
        from paramiko.proxy import ProxyCommand
    except ImportError as exc:
        return f"paramiko cannot be imported ({exc})"
    low, high = SUPPORTED
    if not low <= _version() < high:
        return f"paramiko {paramiko.__version__} is not supported"
    own = vars(ProxyCommand)
    wanted = PUBLIC + ("__init__",) + (HOOKS if is_built_in() else ())
    missing = [name for name in wanted if name not in own]
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


def _plan() -> list[tuple[Any, str, Any]]:
    """(object, name, new value) for everything install() sets, in order."""
    import paramiko
    from paramiko import ssh_exception, util
    from paramiko.packet import Packetizer
    from paramiko.proxy import ProxyCommand

    from . import hooks, logs, pinning
    from .extras import ATTR
    from .readloop import make_packetizer_init

    own = vars(ProxyCommand)
    built_in = is_built_in()
    plan: list[tuple[Any, str, Any]] = []
    if built_in:
        fix = own
    else:
        from .upstream import proxy
        from .upstream import ssh_exception as ours

        fix = vars(proxy.ProxyCommand)
        skip = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__"}
        for name, value in fix.items():
            if name in skip or name == "__init__" or name in hooks.EXTRAS:
                continue
            _fixed[name] = value
            if name in PUBLIC:  # the class gets the fix's own once settled
                value = _choosing[name] = pinning.choosing(value, own[name])
            plan.append((ProxyCommand, name, value))
        for name in EXCEPTIONS:
            cls = getattr(ours, name)
            plan += [
                (cls, "__module__", ssh_exception.__name__),
                (ssh_exception, name, cls),
                (paramiko, name, cls),
            ]
    hooks.FIX.update({n: fix[n] for n in hooks.EXTRAS if n in fix})
    plan += [(ProxyCommand, n, f) for n, f in hooks.EXTRAS.items()]
    plan += [(ProxyCommand, n, v) for n, v in hooks.limits().items()]
    fixed_recv = fix["recv"]

    def uses_fixed_recv(sock: Any) -> bool:
        recv = getattr(type(sock), "recv", None)
        if recv is fixed_recv:
            return True
        return (
            getattr(recv, "__wrapped__", None) is fixed_recv and ATTR in sock.__dict__
        )

    init = make_packetizer_init(vars(Packetizer)["__init__"], uses_fixed_recv)
    plan.insert(0, (Packetizer, "__init__", init))
    tb = logs.unformatted_when_dropped(vars(util)["tb_strings"])
    plan.insert(1, (util, "tb_strings", tb))
    if not built_in:
        plan.append((ProxyCommand, "__init__", fix["__init__"]))
    return plan


def install(*, warn: bool = True, _stacklevel: int = 2) -> bool:
    """Patch paramiko in place; True if the fix is (now) active.

    Leaves paramiko untouched, with a warning (unless ``warn`` is false), when
    the platform or paramiko's shape is unknown, and does nothing when
    ``PARAMIKO_PROXYFIX_DISABLE`` is on.
    """
    with _lock:
        if _saved:
            return True
        if disabled_by_env():
            log.info("PARAMIKO_PROXYFIX_DISABLE is set: paramiko left unpatched")
            return is_built_in()
        reason = unsupported_platform() or unsupported_reason()
        if reason is not None:
            if warn:
                warnings.warn(
                    f"paramiko_proxyfix: {reason}; supported: {SUPPORTED_TEXT} on "
                    "Linux or another POSIX system. paramiko was left unpatched.",
                    RuntimeWarning,
                    stacklevel=_stacklevel,
                )
            return False
        from . import lifecycle, logs

        plan = _plan()
        for obj, name, _ in plan:
            _saved.setdefault((obj, name), vars(obj).get(name, _MISSING))
        for obj, name, new in plan:
            setattr(obj, name, new)
            _put[(obj, name)] = new
        if not is_built_in():
            # __init__ is the fix's: move the instances made before it, then
            # give the class the fix's methods themselves (pinning.py).
            from paramiko.proxy import ProxyCommand

            from . import pinning

            if pinning.pin_early(ProxyCommand, _choosing):
                for name in PUBLIC:
                    setattr(ProxyCommand, name, _fixed[name])
                    _put[(ProxyCommand, name)] = _fixed[name]
        logs.quiet_transport(True)
        lifecycle.register()
        return True


def apply_settings() -> None:
    """Give the fix the configured limits (close timeout, stderr tail...)."""
    from paramiko.proxy import ProxyCommand

    from .hooks import limits

    with _lock:
        if _saved:
            for name, value in limits().items():
                setattr(ProxyCommand, name, value)
                _put[(ProxyCommand, name)] = value


def uninstall() -> bool:
    """Put back exactly what install() replaced; True if anything was undone.

    Instances made while the fix was installed keep working until closed.
    """
    with _lock:
        if not _saved:
            return False
        from paramiko.proxy import ProxyCommand

        from . import logs, pinning, registry

        items = list(_saved.items())
        built_in = is_built_in()
        put = {n: v for (obj, n), v in _put.items() if obj is ProxyCommand}
        if not built_in:  # each instance picks its methods, until moved
            for name in PUBLIC:
                setattr(ProxyCommand, name, _choosing[name])
        for (obj, name), original in items:
            if name == "__init__":
                _restore(obj, name, original)
        # __init__ is back: no new fixed instance can appear from here on.
        if not built_in:
            pinning.unpin_early()
        for proxy in registry.live():
            try:
                proxy.__class__ = pinning.keeping_fix(type(proxy), ProxyCommand, put)
            except Exception:  # a class that cannot be subclassed
                log.warning(
                    "uninstall(): an open %s cannot keep the fix's methods; "
                    "close it first",
                    type(proxy).__qualname__,
                )
        for (obj, name), original in reversed(items):
            if name != "__init__":
                _restore(obj, name, original)
        _saved.clear()
        _put.clear()
        logs.quiet_transport(False)
        return True


def _restore(obj: Any, name: str, original: Any) -> None:
    if original is _MISSING:
        delattr(obj, name)
    else:
        setattr(obj, name, original)


def is_installed() -> bool:
    """Whether the fix is active: installed, or built into paramiko."""
    with _lock:
        return bool(_saved) or is_built_in()
