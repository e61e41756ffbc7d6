"""``python -m paramiko_proxyfix``: see :mod:`paramiko_proxyfix.cli`."""

import sys

from .cli.main import main

sys.exit(main())
