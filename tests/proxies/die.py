"""A proxy that fails at once: writes --stderr, sleeps --delay, exits --status.

It never reads stdin nor writes stdout, like ``ssh -W`` refused by the bastion.
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--status", type=int, default=1)
    parser.add_argument("--stderr", default="")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    if args.stderr:
        sys.stderr.write(args.stderr + "\n")
        sys.stderr.flush()
    time.sleep(args.delay)
    sys.exit(args.status)


if __name__ == "__main__":
    main()
