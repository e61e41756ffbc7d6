"""A threaded TCP echo server on loopback, the simplest target for a proxy."""

from __future__ import annotations

import selectors
import socket

from tests.support.loopback import loopback


class EchoServer(loopback.LoopbackListener):
    """Echoes each connection's bytes back; half-closes on the peer's EOF.

    ``stop()`` closes everything and joins the threads.
    """

    def _serve(self, conn: socket.socket) -> None:
        if not self._track(conn):
            return
        # a selector, not select(): tests may push descriptors above 1023
        with selectors.DefaultSelector() as sel:
            sel.register(conn, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    if not sel.select(0.1):
                        continue
                    data = conn.recv(65536)
                    if not data:
                        conn.shutdown(socket.SHUT_WR)
                        return
                    conn.sendall(data)
            except OSError:
                return


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
