"""WebSocket clients that connect, finish the handshake and never read again.

``python -m benchmarks.slow_clients HOST PORT PATH COUNT`` prints ``ready N``
on stdout once N clients are connected, then holds them until stdin closes.
Each socket asks for the smallest receive buffer before connecting, so the
kernel soon stops taking data for it and the server's own queue for that
subscriber fills: the situation ``--slow-policy`` is about.
"""

from __future__ import annotations

import base64
import os
import socket
import sys

#: Requested SO_RCVBUF; Linux doubles it and enforces a floor of a few KiB.
RCVBUF = 4096
#: Seconds one handshake may take.
HANDSHAKE_TIMEOUT = 10.0
#: Loopback source addresses used (127.0.0.252..254), apart from the node
#: generator's range, so the slow clients do not eat its per-IP budget.
SOURCES = ("127.0.0.252", "127.0.0.253", "127.0.0.254")


def open_slow(host: str, port: int, path: str, source: str) -> socket.socket:
    """Connect and complete the WebSocket handshake; return the socket unread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.settimeout(HANDSHAKE_TIMEOUT)
    sock.bind((source, 0))
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: leave any frame after the head unread
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return sock


def main(argv: list[str]) -> int:
    """Open the clients, report, hold until stdin ends."""
    host, port, path, count = argv[0], int(argv[1]), argv[2], int(argv[3])
    socks = [open_slow(host, port, path, SOURCES[i % len(SOURCES)]) for i in range(count)]
    print(f"ready {len(socks)}", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
