"""Closes its stdout at once and lives on for --seconds (default 60).

The reader sees EOF while the process still runs: EOF alone must count as
"proxy gone", whatever the process does.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.close(1)
    time.sleep(args.seconds)


if __name__ == "__main__":
    main()
