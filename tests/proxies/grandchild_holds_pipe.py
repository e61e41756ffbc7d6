"""A relay whose background child keeps the stdout pipe open after it exits.

Prints ``grandchild-pid=N`` to stderr (a grandchild of the test process),
relays, and exits on SIGUSR1 or after --exit-after SEC with --exit-status.
The reader then sees the process gone but no EOF on the pipe.
--hold-stderr makes the grandchild keep stderr open too, --hold-stdin stdin
(a launcher's child holds all of them).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading

from _relay import connect, relay, say


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--exit-status", type=int, default=0)
    parser.add_argument("--hold-stderr", action="store_true")
    parser.add_argument("--hold-stdin", action="store_true")
    args = parser.parse_args()
    quit_now = lambda *_: os._exit(args.exit_status)  # noqa: E731
    signal.signal(signal.SIGUSR1, quit_now)
    child = subprocess.Popen(
        ["sleep", "600"],
        stdin=None if args.hold_stdin else subprocess.DEVNULL,
        stderr=None if args.hold_stderr else subprocess.DEVNULL,
    )  # stdout inherited: the pipe stays open while it sleeps
    say(f"grandchild-pid={child.pid}")
    if args.exit_after is not None:
        threading.Timer(args.exit_after, quit_now).start()
    relay(connect(args.host, args.port))
    os._exit(args.exit_status)


if __name__ == "__main__":
    main()
