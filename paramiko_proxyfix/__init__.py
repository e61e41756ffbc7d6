"""Make paramiko's ProxyCommand safe in long-running processes.

``import paramiko_proxyfix`` patches paramiko in place: a proxy that dies
ends its connection at once with its exit status and stderr, and closing a
connection terminates and reaps its proxy. Set ``PARAMIKO_PROXYFIX_DISABLE=1``
to make the import do nothing. Where paramiko was built from ``patches/`` (it
carries the fix in its own ``proxy.py``), the import adds only the worker
extras: the death signal, fork and exit handling, idle closing, the quiet log.
"""

import sys

from . import _patch
from ._version import __version__
from .config import configure
from .errors import (
    ProxyCommandClosed,
    ProxyCommandExited,
    ProxyCommandForeign,
    ProxyCommandNotFound,
    ProxyCommandNotPermitted,
    ProxyCommandStartError,
)
from .registry import close_all, close_idle, proxies, set_idle_timeout, stats

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
