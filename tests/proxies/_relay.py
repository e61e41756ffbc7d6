"""Shared byte relay for the test proxies (stdlib only, Python 3.9+).

Behaves like ``ssh -W``: bytes from fd 0 go to a TCP socket, bytes from the
socket go to fd 1.  The proxies import it from their own directory, which
Python puts first on sys.path when it runs a script.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time


def connect(host: str, port: int) -> socket.socket:
    """Connect or exit 255 with an ssh-like message, as ``ssh -W`` does."""
    try:
        return socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        sys.stderr.write(f"relay: connect to {host} port {port}: {exc}\r\n")
        sys.stderr.flush()
        sys.exit(255)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written (fd 1 may be a pipe)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(
    sock: socket.socket,
    limit: int | None = None,
    stop_on_eof: bool = True,
    drain_seconds: float = 5.0,
) -> str:
    """Relay until one side ends; return why.

    Reasons: "tcp-eof", "stdin-eof", "stdout-closed", "limit".

    ``limit`` caps the bytes relayed in both directions together; the chunk
    that crosses it is cut so exactly ``limit`` bytes pass.  On stdin EOF the
    socket is half-closed and remaining TCP data is passed on for at most
    ``drain_seconds``.  With ``stop_on_eof`` false an EOF or error only ends
    that direction and this function never returns.
    """
    sock.settimeout(None)
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    total = 0
    tcp_open = True
    deadline: float | None = None  # set once stdin hit EOF
    while True:
        wait_ms = None
        if deadline is not None:
            wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
        events = poller.poll(wait_ms)
        if not events and deadline is not None:
            return "stdin-eof"
        for fd, _ in events:
            try:
                data = os.read(0, 65536) if fd == 0 else sock.recv(65536)
            except OSError:
                data = b""
            if limit is not None and total + len(data) >= limit:
                _forward(fd, sock, data[: limit - total], tcp_open)
                return "limit"
            total += len(data)
            if data:
                try:
                    tcp_open = _forward(fd, sock, data, tcp_open)
                    continue
                except OSError:  # our stdout's reader went away
                    if stop_on_eof:
                        return "stdout-closed"
                    data = b""
            poller.unregister(fd)
            if fd == 0:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                if stop_on_eof:
                    deadline = time.monotonic() + drain_seconds
            else:
                tcp_open = False
                if stop_on_eof:
                    return "stdin-eof" if deadline is not None else "tcp-eof"


def _forward(fd: int, sock: socket.socket, data: bytes, tcp_open: bool) -> bool:
    """Pass ``data`` on; return whether the socket is still writable."""
    if fd != 0:
        write_all(1, data)
    elif tcp_open and data:
        try:
            sock.sendall(data)
        except OSError:
            return False
    return tcp_open


def say(text: str) -> None:
    """Write a line to stderr right away (tests read pids from it)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
