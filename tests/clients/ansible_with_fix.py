"""``ansible`` with the fix installed: the tiny-wrapper way to adopt it."""

import sys

from ansible.cli.adhoc import main

import paramiko_proxyfix  # noqa: F401  -- before ansible opens any connection

if __name__ == "__main__":
    sys.exit(main())
