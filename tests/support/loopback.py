"""The package's in-process SSH server (paramiko_proxyfix/cli/loopback.py), by path.

``import paramiko_proxyfix.cli.loopback`` would run the package's ``__init__``,
which patches paramiko; the test infrastructure must also work against
upstream paramiko alone (tests/test_infra.py). The file imports nothing from
the package, so it is loaded as a module of its own, once per process.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

from tests.support import REPO_ROOT

if TYPE_CHECKING:  # the same code, as type checkers should see it
    from paramiko_proxyfix.cli import loopback
else:
    _spec = importlib.util.spec_from_file_location(
        "proxyfix_test_loopback",
        REPO_ROOT / "paramiko_proxyfix" / "cli" / "loopback.py",
    )
    loopback = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = loopback  # as an import would: for pickle, typing
    _spec.loader.exec_module(loopback)

__all__ = ["loopback"]
