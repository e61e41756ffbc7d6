"""A relay with a child process (``sleep 600``), printed as ``child-pid=N``.

The child shares the proxy's process group but not its pipes: it shows
whether close() ends the proxy's whole group or only the proxy.
"""

from __future__ import annotations

import subprocess
import sys

from _relay import connect, relay, say


def main() -> None:
    child = subprocess.Popen(
        ["sleep", "600"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    say(f"child-pid={child.pid}")
    relay(connect(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
