"""Make paramiko's ProxyCommand safe in long-running processes.

``import paramiko_proxyfix`` patches paramiko in place: a proxy that dies
ends its connection at once with its exit status and stderr, and closing a
connection terminates and reaps its proxy. Set ``PARAMIKO_PROXYFIX_DISABLE=1``
to make the import do nothing. Where paramiko was built from ``patches/``
(it carries the fix as ``paramiko._proxyfix``), nothing is patched and this
API works on that copy, so both spellings of every name are the same object.
"""

import importlib
import sys

from . import _patch
from ._version import __version__

# The fix's own modules: ours, or the copy inside a patched paramiko.
_core = _patch.builtin_fix()
_prefix = __name__ if _core is None else _core.__name__
_config = importlib.import_module(_prefix + ".config")
_errors = importlib.import_module(_prefix + ".errors")
_registry = importlib.import_module(_prefix + ".registry")

configure = _config.configure
ProxyCommandClosed = _errors.ProxyCommandClosed
ProxyCommandExited = _errors.ProxyCommandExited
ProxyCommandForeign = _errors.ProxyCommandForeign
ProxyCommandNotFound = _errors.ProxyCommandNotFound
ProxyCommandNotPermitted = _errors.ProxyCommandNotPermitted
ProxyCommandStartError = _errors.ProxyCommandStartError
close_all = _registry.close_all
close_idle = _registry.close_idle
proxies = _registry.proxies
set_idle_timeout = _registry.set_idle_timeout
stats = _registry.stats
install = _patch.install
is_installed = _patch.is_installed
uninstall = _patch.uninstall

__all__ = [
    "ProxyCommandClosed",
    "ProxyCommandExited",
    "ProxyCommandForeign",
    "ProxyCommandNotFound",
    "ProxyCommandNotPermitted",
    "ProxyCommandStartError",
    "__version__",
    "close_all",
    "close_idle",
    "configure",
    "install",
    "is_installed",
    "proxies",
    "set_idle_timeout",
    "stats",
    "uninstall",
]

install(_stacklevel=3)  # a warning names the line that imported us

# A Celery worker imports celery before the task modules that import this
# package: connect its worker signals then, so no second line is needed.
if "celery" in sys.modules:
    from . import celery as _celery  # noqa: F401
