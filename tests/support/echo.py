"""A threaded TCP echo server on loopback, the simplest target for a proxy."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Callable


class EchoServer:
    """Echoes each connection's bytes back; half-closes on the peer's EOF."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._start(self._accept_loop)

    def _start(self, target: Callable[..., object], *args: object) -> None:
        name = f"proxyfix-test-echo:{self.port} {target.__name__}"
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            self._start(self._echo, conn)

    def _echo(self, conn: socket.socket) -> None:
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

    def stop(self) -> None:
        """Close everything and join the threads."""
        self._stopping.set()
        self._listener.close()
        with self._lock:
            threads, conns = list(self._threads), list(self._conns)
        for thread in threads:
            thread.join(5)
        for conn in conns:
            conn.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
