"""Instances that outlive a switch of ProxyCommand's methods keep theirs.

The fix's methods need the state its ``__init__`` sets up, and upstream's
mishandle it (non-blocking pipes, read-ahead bytes). So while install() or
uninstall() switches the class, every instance is moved, or not, so that it
runs the methods made for its state:

- install(): instances made before it are found (``gc.get_referrers`` of the
  classes) and moved to a subclass of their class whose methods pick per
  instance, by the fix's attribute; then ProxyCommand gets the fix's methods
  themselves, with no such look on each call (an idle tick is short);
- uninstall(): the class gets those per-instance methods back, the instances
  install() moved get their classes back, and every live instance the fix
  manages moves to a subclass that keeps the fix's methods.

Switches happen under _patch's lock; at each moment every instance, even
one being made in another thread, runs the methods for its state.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from .extras import ATTR

__all__ = ["choosing", "keeping_fix", "pin_early", "unpin_early"]

#: Subclasses that keep the fix's methods (uninstall), by the class they extend.
_keeping: dict[type, type] = {}
#: Subclasses that pick per instance (install), by the class they extend.
_choosing: dict[type, type] = {}
#: Instances install() moved, and the class each had (by reference, not
#: by hash: a subclass may define __eq__).
_early: list[tuple[weakref.ReferenceType[Any], type]] = []


def choosing(fixed: Any, original: Any) -> Any:
    """Upstream's ``original`` for an instance without the fix's state, else
    the fix's ``fixed`` (a function or a property)."""
    if isinstance(fixed, property):
        assert fixed.fget is not None and isinstance(original, property)
        get_fixed, get_original = fixed.fget, original.fget
        assert get_original is not None

        def get(self: Any) -> Any:
            return (get_fixed if ATTR in self.__dict__ else get_original)(self)

        get.__wrapped__ = get_fixed  # type: ignore[attr-defined]
        return property(get, doc=original.__doc__)

    def method(self: Any, *args: Any) -> Any:
        if ATTR in self.__dict__:
            return fixed(self, *args)
        return original(self, *args)

    method.__name__ = fixed.__name__
    method.__qualname__ = original.__qualname__
    method.__doc__ = fixed.__doc__
    method.__wrapped__ = fixed  # type: ignore[attr-defined]
    return method


def _inherited(cls: type, base: type, names: Any) -> list[str]:
    """Those of ``names`` that ``cls`` takes from ``base`` (not its own)."""
    out = []
    for name in names:
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is base:
            out.append(name)
    return out


def _subclass(cls: type, attrs: dict[str, Any]) -> type:
    attrs = {**attrs, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return type(cls.__name__, (cls,), attrs)


def _all_classes(base: type) -> list[type]:
    found, todo = [base], [base]
    while todo:
        subs: list[type] = todo.pop().__subclasses__()
        for sub in subs:
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def pin_early(base: type, methods: dict[str, Any]) -> bool:
    """Move every instance of ``base`` that exists now to a subclass of its
    class holding ``methods`` (those it does not define itself). False if
    one's class defines some itself: its ``super()`` calls reach ``base``,
    which must then keep ``methods``."""
    ours = set(_keeping.values()) | set(_choosing.values())
    classes = [k for k in _all_classes(base) if k not in ours]
    alone = True
    for obj in gc.get_referrers(*classes):
        cls = type(obj)
        if cls not in classes or not isinstance(obj, base):
            continue
        names = _inherited(cls, base, methods)
        alone = alone and len(names) == len(methods)
        try:
            if cls not in _choosing:
                _choosing[cls] = _subclass(cls, {n: methods[n] for n in names})
            _early.append((weakref.ref(obj), cls))
            obj.__class__ = _choosing[cls]
        except Exception:  # an odd metaclass, say: base keeps ``methods``
            alone = False
    return alone


def unpin_early() -> None:
    """Give the instances pin_early() moved their own classes back."""
    for ref, cls in _early:
        obj = ref()
        if obj is not None and type(obj) is _choosing.get(cls):
            obj.__class__ = cls  # the move install() made, back
    _early.clear()


def keeping_fix(cls: type, base: type, put: dict[str, Any]) -> type:
    """A subclass of ``cls`` that keeps ``put`` (what install() set on
    ``base``) for the names it takes from ``base``."""
    if cls in _keeping.values():
        return cls
    if cls not in _keeping:
        keep = {n: put[n] for n in _inherited(cls, base, put)}
        _keeping[cls] = _subclass(cls, keep)
    return _keeping[cls]
