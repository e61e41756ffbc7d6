"""A relay that only SIGKILL ends: it ignores SIGTERM, SIGHUP and SIGINT.

EOF on stdin or on the TCP side does not end it either, so a close() that
only sends SIGTERM (or only closes pipes) leaves it running.
"""

from __future__ import annotations

import signal
import sys
import time

for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(_sig, signal.SIG_IGN)  # first thing: no window for a TERM

from _relay import connect, relay, say  # noqa: E402


def main() -> None:
    sock = connect(sys.argv[1], int(sys.argv[2]))
    say("ignoring-term")
    relay(sock, stop_on_eof=False)
    while True:  # not reached: relay() never returns here
        time.sleep(3600)


if __name__ == "__main__":
    main()
