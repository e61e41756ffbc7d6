"""``python -m paramiko_proxyfix``: see :mod:`paramiko_proxyfix.cli`."""

import sys

from .cli import main

sys.exit(main())
