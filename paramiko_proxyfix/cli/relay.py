"""A byte relay that stands in for ``ssh -W HOST:PORT`` in the demo and check.

Run it by path (``python .../relay.py HOST PORT``) so that it starts fast and
imports nothing but the standard library. Like ``ssh -W`` it exits 255 with a
message on stderr when it cannot connect, and 0 once either side ends.
"""

from __future__ import annotations

import os
import select
import socket
import sys


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(host: str, port: int) -> int:
    """Copy stdin to the TCP connection and the connection to stdout."""
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        sys.stderr.write(f"relay: connect to {host} port {port}: {reason}\n")
        return 255
    sock.settimeout(None)
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            try:
                data = os.read(0, 65536) if fd == 0 else sock.recv(65536)
                if not data:
                    return 0
                if fd == 0:
                    sock.sendall(data)
                else:
                    _write_all(1, data)
            except OSError:
                return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write("usage: relay.py HOST PORT\n")
        sys.exit(2)
    sys.exit(relay(sys.argv[1], int(sys.argv[2])))
