"""The front door (HTTP and the WebSocket handshake and frames) fed
arbitrary bytes at arbitrary split points, in process.

One rule, h11's: whatever arrives, the connection ends with a response or a
clean close — output that is empty or starts with an HTTP/1.1 status line —
and no exception escapes :meth:`FrontDoor.serve`. Timeouts run on Trio's
mock clock, so a request that never completes costs no real time.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
from typing import Any

import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from livenotify.config import Config, Limits
from livenotify.hub import Hub
from livenotify.session import Session
from livenotify.transports.http import FrontDoor
from livenotify.transports.ws import WsTransport

CONFIG = Config(
    events=("a", "furniture_created"),
    handshake_timeout=5.0,
    publish_token="t",
    limits=Limits(max_message_bytes=512),
)

WS_HANDSHAKE = (
    b"GET /?events=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(opcode: int, payload: bytes, fin: bool, masked: bool) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if masked else 0
    head += bytes([bit | n]) if n < 126 else bytes([bit | 126]) + struct.pack("!H", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


methods = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"G\x00T", b""])
targets = st.sampled_from(
    [b"/", b"/health", b"/publish/a", b"/publish/zz", b"/publish/", b"/nope", b"*", b"/%ff"]
) | st.binary(max_size=20)
header_lines = st.lists(
    st.sampled_from(
        [b"Host: x", b"Content-Length: 5", b"Content-Length: 99999", b"Content-Length: -1",
         b"Transfer-Encoding: chunked", b"Authorization: Bearer t", b"Connection: close",
         b"Content-Type: application/json", b"Upgrade: websocket", b"Connection: Upgrade",
         b"Expect: 100-continue", b"X: \xff"]
    ) | st.binary(max_size=30),
    max_size=8,
)  # fmt: skip
http_requests = st.builds(
    lambda m, t, v, hs, body: m + b" " + t + b" " + v + b"\r\n" + b"".join(h + b"\r\n" for h in hs)
    + b"\r\n" + body,
    methods, targets, st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"X"]), header_lines,
    st.binary(max_size=40) | st.just(b'{"x":1}') | st.just(b"5\r\nhello\r\n0\r\n\r\n"),
)  # fmt: skip
ws_frames = st.builds(
    client_frame,
    st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11]),
    st.binary(max_size=40)
    | st.just(b'{"type":"ping"}')
    | st.just(b'{"type":"a","token":"t"}')
    | st.just(b"\x03\xe8"),
    st.booleans(),
    st.booleans(),
)
inputs = (
    st.binary(max_size=300)
    | st.lists(http_requests, min_size=1, max_size=3).map(b"".join)
    | st.lists(ws_frames, max_size=6).map(lambda fs: WS_HANDSHAKE + b"".join(fs))
)


async def run_front_door(data: bytes, cuts: list[int], close: bool) -> bytes:
    """Feed ``data`` in pieces cut at ``cuts``, then EOF (if ``close``, else
    after a long silence); the bytes the server sent before it closed."""
    hub = Hub(CONFIG)

    class App:
        pass

    app: Any = App()
    app.hub = hub

    async def start_session(transport: WsTransport, events: tuple[str, ...]) -> None:
        await Session(hub, CONFIG, transport, None, events).run()

    door = FrontDoor(CONFIG, start_session, app)
    client, server = trio.testing.memory_stream_pair()
    out = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(door.serve, server, "fuzz:1")
        edges = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        try:
            for start, end in itertools.pairwise(edges):
                await client.send_all(data[start:end])
                await trio.sleep(0)  # let the server take this piece alone
        except trio.BrokenResourceError:
            pass  # the server has closed already (it answered garbage)
        ended = False
        if not close:
            # Mock time: the server's own deadlines end a request that never
            # completes; an open WebSocket stays open, until the EOF below.
            with trio.move_on_after(600):
                while chunk := await client.receive_some():
                    out += chunk
                ended = True
        if not ended:
            try:
                await client.send_eof()
            except trio.BrokenResourceError:
                pass
            with trio.fail_after(600):
                while chunk := await client.receive_some():
                    out += chunk
    await client.aclose()
    return bytes(out)


@given(data=inputs, cuts=st.lists(st.integers(0, 10_000), max_size=8), close=st.booleans())
@example(data=WS_HANDSHAKE + client_frame(1, b"\xc3\x28", True, True), cuts=[], close=True)
@example(data=b"GET / HTTP/1.1\r\n", cuts=[], close=False)
@example(data=b"POST /publish/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", cuts=[3], close=True)
def test_front_door_answers_or_closes(data: bytes, cuts: list[int], close: bool) -> None:
    failures = _Failures()
    logger = logging.getLogger("livenotify")
    logger.addHandler(failures)
    try:
        out = trio.run(
            run_front_door, data, cuts, close, clock=trio.testing.MockClock(autojump_threshold=0)
        )
    finally:
        logger.removeHandler(failures)
    assert out == b"" or out.startswith(b"HTTP/1.1 "), out[:200]
    # FrontDoor.serve logs what escaped a connection (and a session what
    # escaped it) instead of raising: either one is a failure here.
    assert not failures.records, [r.getMessage() for r in failures.records]


class _Failures(logging.Handler):
    """Collects log records that carry an exception."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)
