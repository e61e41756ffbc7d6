"""Make paramiko's ProxyCommand safe in long-running processes.

``import paramiko_proxyfix`` patches paramiko in place: a proxy that dies
ends its connection at once with its exit status and stderr, and closing a
connection terminates and reaps its proxy. Set ``PARAMIKO_PROXYFIX_DISABLE=1``
to make the import do nothing.
"""

import sys

from ._patch import install, is_installed, uninstall
from .config import configure
from .errors import (
    ProxyCommandClosed,
    ProxyCommandExited,
    ProxyCommandForeign,
    ProxyCommandStartError,
)
from .registry import close_all, close_idle, proxies, set_idle_timeout

__version__ = "0.1.0"

__all__ = [
    "ProxyCommandClosed",
    "ProxyCommandExited",
    "ProxyCommandForeign",
    "ProxyCommandStartError",
    "__version__",
    "close_all",
    "close_idle",
    "configure",
    "install",
    "is_installed",
    "proxies",
    "set_idle_timeout",
    "uninstall",
]

install()

# A Celery worker imports celery before the task modules that import this
# package: connect its worker signals then, so no second line is needed.
if "celery" in sys.modules:
    from . import celery as _celery  # noqa: F401
