"""Byte relay between stdin/stdout and HOST:PORT, like ``ssh -W``.

Exits 0 on TCP EOF or stdin EOF.  --die-after-bytes N ends it after N bytes
(both directions together); --exit-status and --stderr then say how it ends.
"""

from __future__ import annotations

import argparse
import os
import sys

from _relay import connect, relay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--die-after-bytes", type=int, default=None)
    parser.add_argument("--exit-status", type=int, default=0)
    parser.add_argument("--stderr", default="", help="written when it ends")
    args = parser.parse_args()
    sock = connect(args.host, args.port)
    reason = relay(sock, limit=args.die_after_bytes)
    if args.stderr:
        sys.stderr.write(args.stderr + "\n")
        sys.stderr.flush()
    if reason == "limit":  # die abruptly, like a killed proxy
        os._exit(args.exit_status)
    sys.exit(args.exit_status)


if __name__ == "__main__":
    main()
