"""Make paramiko's ProxyCommand safe in long-running processes.

``import paramiko_proxyfix`` patches paramiko in place: a proxy that dies
ends its connection at once with its exit status and stderr, and closing a
connection terminates and reaps its proxy. Set ``PARAMIKO_PROXYFIX_DISABLE=1``
to make the import do nothing.
"""

from ._patch import install, is_installed, uninstall
from .config import configure
from .errors import ProxyCommandExited, ProxyCommandForeign, ProxyCommandStartError
from .registry import close_all, close_idle, proxies

__version__ = "0.1.0"

__all__ = [
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
    "uninstall",
]

install()
