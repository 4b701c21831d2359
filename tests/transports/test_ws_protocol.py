"""The server's own WebSocket (wsproto behind the front door), byte by byte:
protocol violations close with the code docs/protocol.md promises, pings
are answered, and a producer that closes right after a burst loses nothing.
Raw sockets, so that the client side does exactly what each test says."""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.helpers import LineClient, ServerProcess, running_server

MAX_MESSAGE = 1024
HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server("--max-message-bytes", str(MAX_MESSAGE)) as srv:
        yield srv


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWs:
    """A WebSocket client on a plain socket that reads frames by hand."""

    def __init__(self, port: int, path: str = "/") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(HANDSHAKE.format(path=path).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._take(2)
        assert not b1 & 0x80, "server frames are unmasked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8))
        return b0 & 0x0F, self._take(n)

    def recv_json(self) -> dict[str, Any]:
        opcode, payload = self.recv_frame()
        assert opcode == 1, (opcode, payload)
        obj: dict[str, Any] = json.loads(payload)
        return obj

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def expect_close(self, code: int) -> None:
        """Frames until a close frame with ``code``; then the server hangs up."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 8:
                break
        assert struct.unpack("!H", payload[:2])[0] == code, payload
        self.sock.sendall(frame(8, payload[:2]))
        start = time.monotonic()
        try:
            assert self.sock.recv(65536) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 1.0  # no waiting for a timeout
        self.sock.close()


def welcomed(port: int, path: str = "/") -> RawWs:
    ws = RawWs(port, path)
    assert ws.recv_json()["type"] == "welcome"
    return ws


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(1, b'{"type":"ping","x":"\xc3\x28"}'), 1007),  # invalid UTF-8
        (frame(1, b"\xed\xa0\x80"), 1007),  # an encoded surrogate
        (frame(1, b'{"type":"ping"}', mask=False), 1002),  # unmasked client frame
        (frame(3, b"x"), 1002),  # reserved opcode
        (frame(8, struct.pack("!H", 999)), 1002),  # bad close code
        (frame(8, struct.pack("!H", 1005)), 1002),  # a code that may not be sent
        (frame(0, b"x"), 1002),  # continuation without a start
        (frame(9, b"x" * 126), 1002),  # control frame too long
        (frame(1, b"x" * (MAX_MESSAGE + 1)), 1009),  # too big in one frame
        # too big across fragments
        (frame(1, b"x" * 600, fin=False) + frame(0, b"y" * 600), 1009),
        # bytes, not characters: 400 three-byte characters are 1,200 bytes
        (frame(1, ("\u20ac" * 400).encode()), 1009),
    ],
)
def test_violation_closes_with_code(server: ServerProcess, data: bytes, code: int) -> None:
    ws = welcomed(server.ws_port)
    ws.send(data)
    ws.expect_close(code)
    # The server goes on.
    welcomed(server.ws_port).sock.close()


def test_within_limit_in_bytes_and_fragments(server: ServerProcess) -> None:
    ws = welcomed(server.ws_port)
    pad = "\u20ac" * ((MAX_MESSAGE - 40) // 3)
    text = json.dumps({"type": "ping", "p": pad}, ensure_ascii=False).encode()
    assert len(text) <= MAX_MESSAGE
    ws.send(frame(1, text[:10], fin=False) + frame(9, b"mid") + frame(0, text[10:]))
    assert ws.recv_frame() == (10, b"mid")  # pong, between the fragments
    assert ws.recv_json()["type"] == "pong"
    ws.send(frame(8, struct.pack("!H", 1000)))
    opcode, payload = ws.recv_frame()
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1000
    assert ws.sock.recv(10) == b""  # the server closes after the handshake
    ws.sock.close()


def test_binary_frame_is_an_error_reply(server: ServerProcess) -> None:
    ws = welcomed(server.ws_port)
    ws.send(frame(2, b'{"type":"ping"}'))
    assert ws.recv_json()["code"] == "binary_frame"
    ws.send(frame(1, b'{"type":"ping"}'))
    assert ws.recv_json()["type"] == "pong"
    ws.sock.close()


def test_empty_events_query_means_none(server: ServerProcess) -> None:
    producer = welcomed(server.ws_port, "/?events=")
    everything = welcomed(server.ws_port, "/")
    producer.send(frame(1, b'{"type":"furniture_created","n":1}'))
    got = everything.recv_json()
    assert (got["type"], got["n"]) == ("furniture_created", 1)
    producer.send(frame(1, b'{"type":"subscriptions"}'))
    assert producer.recv_json() == {"type": "subscriptions", "events": []}
    everything.send(frame(1, b'{"type":"subscriptions"}'))
    assert everything.recv_json() == {"type": "subscriptions", "events": ["*"]}
    producer.sock.close()
    everything.sock.close()


BURST = 3000


def wait_sent(sock: socket.socket, timeout: float = 20.0) -> None:
    """Until the kernel's send queue for ``sock`` is empty (Linux TIOCOUTQ)."""
    deadline = time.monotonic() + timeout
    while True:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        if queued == 0:
            return
        assert time.monotonic() < deadline, f"{queued} bytes still unsent"
        time.sleep(0.01)  # polling a kernel counter, bounded by the deadline


@pytest.mark.parametrize(
    "producer_kind",
    [
        "library",
        "raw-no-events",
        "raw-star-abrupt",
        pytest.param(
            "raw-star-reset",
            marks=pytest.mark.skipif(sys.platform != "linux", reason="TIOCOUTQ"),
        ),
    ],
)
def test_producer_burst_then_close_loses_nothing(producer_kind: str) -> None:
    """Issue 13.9: a producer that closes right after a burst."""
    with running_server("--rate-limit", "0", "--queue-size", str(BURST * 2)) as srv:
        got: list[int] = []
        sub = connect(f"ws://127.0.0.1:{srv.ws_port}/?events=furniture_created")
        assert json.loads(sub.recv(timeout=10))["type"] == "welcome"

        def read() -> None:
            while len(got) < BURST:
                got.append(json.loads(sub.recv(timeout=30))["seq"])

        reader = threading.Thread(target=read)
        reader.start()
        # "raw-star-reset": another publisher's notifications reach the
        # producer (subscribed to "*"), which never reads them, so its close
        # is a reset, and the server's writes to it then fail.
        stop = threading.Event()
        other = LineClient("127.0.0.1", srv.tcp_port)
        assert other.recv()["type"] == "welcome"

        def publish_others() -> None:
            while not stop.is_set():
                other.send_line('{"type":"furniture_deleted"}')
                stop.wait(0.002)  # pacing, not synchronisation

        others = threading.Thread(target=publish_others)
        if producer_kind == "raw-star-reset":
            others.start()
        messages = [json.dumps({"type": "furniture_created", "seq": i}) for i in range(BURST)]
        if producer_kind == "library":
            # A client library that reads in the background and closes
            # with a close handshake, connected as the seeds do (to "*").
            with connect(f"ws://127.0.0.1:{srv.ws_port}/") as library:
                for text in messages:
                    library.send(text)
        else:
            path = "/?events=" if producer_kind == "raw-no-events" else "/"
            producer = welcomed(srv.ws_port, path)
            producer.send(b"".join(frame(1, m.encode()) for m in messages))
            if producer_kind == "raw-no-events":
                producer.send(frame(8, struct.pack("!H", 1000)))
                producer.sock.shutdown(socket.SHUT_WR)
                while producer.sock.recv(65536):
                    pass
            if producer_kind == "raw-star-reset":
                # Wait until something unread is there, so the close is a
                # reset; and until the producer's kernel has sent the whole
                # burst (a reset discards what it still holds, which no
                # server can keep).
                assert select.select([producer.sock], [], [], 10)[0]
                wait_sent(producer.sock)
            producer.sock.close()
        reader.join(60)
        stop.set()
        if others.is_alive():
            others.join(10)
        other.close()
        sub.close()
        assert got == list(range(BURST))
