"""The ``replay`` scenario: how long one subscriber takes to receive
history it missed (``subscribe bench since E:N``), from the server's memory.

The publisher sends ``count`` notifications before anyone listens; then one
TCP subscriber asks for everything since the welcome's position and the
clock runs from its ``subscribe`` to the last replayed notification read.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Protocol

#: Seconds any one read may take.
READ_TIMEOUT = 60.0


class HasTcpPort(Protocol):
    tcp_port: int | None


def _connect(port: int) -> tuple[socket.socket, Any, dict[str, Any]]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    file = sock.makefile("rb")
    welcome = json.loads(file.readline())
    assert welcome["type"] == "welcome", welcome
    return sock, file, welcome


def replay(server: HasTcpPort, count: int) -> dict[str, Any]:
    """Publish ``count`` notifications, then time their replay to one subscriber."""
    assert server.tcp_port is not None
    pub, pub_file, welcome = _connect(server.tcp_port)
    since = welcome["position"]
    lines = "".join(
        json.dumps({"type": "publish", "event": "bench", "data": {"seq": i}}) + "\n"
        for i in range(count)
    )
    pub.sendall(lines.encode())
    acks = 0
    while acks < count:
        acks += json.loads(pub_file.readline())["type"] == "published"
    pub.close()
    sub, sub_file, _ = _connect(server.tcp_port)
    start = time.perf_counter()
    sub.sendall(f"subscribe bench since {since}\n".encode())
    reply = json.loads(sub_file.readline())
    first = time.perf_counter()
    assert reply["type"] == "subscribed" and reply["recovered"], reply
    assert reply["replayed"] == count, reply
    offsets = [json.loads(sub_file.readline())["offset"] for _ in range(count)]
    seconds = time.perf_counter() - start
    sub.close()
    base = int(since.split(":")[1])
    assert offsets == list(range(base + 1, base + count + 1)), "gap or duplicate in the replay"
    return {
        "replayed": count,
        "seconds": seconds,
        "reply_ms": (first - start) * 1000,
        "replayed_per_s": count / seconds,
    }
