"""A relay that first writes --bytes (default 4 MiB) to stderr.

If nobody reads the stderr pipe it blocks on the write and never relays.
Prints ``flood-done`` to stderr once all was written.
"""

from __future__ import annotations

import argparse

from _relay import connect, relay, say, write_all


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--bytes", type=int, default=4 * 1024 * 1024)
    args = parser.parse_args()
    line = b"stderr flood " + b"x" * 50 + b"\n"
    data = (line * (args.bytes // len(line) + 1))[: args.bytes]
    write_all(2, data)
    say("flood-done")
    relay(connect(args.host, args.port))


if __name__ == "__main__":
    main()
