"""WebSocket: text frames via trio-websocket, with pre-framed broadcast writes.

trio-websocket handles the handshake, reading, ping/pong and the close
handshake. Outgoing messages bypass its per-message ``send_message`` (which
runs wsproto for every frame of every subscriber): a server-to-client text
frame is unmasked, so :meth:`Payload.ws_frame` builds it once for everyone
and we write it straight to the stream under the connection's own lock,
which keeps it from interleaving with trio-websocket's control frames. We
only ever send whole, unfragmented, uncompressed frames (no extension is
negotiated), so wsproto's connection state is unaffected.
"""

from __future__ import annotations

import os

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .. import protocol
from ..payload import Payload
from ..protocol import ProtocolError
from .base import TransportClosed
from .tcp import raw_send, raw_socket

#: How long the closing handshake may take before we drop the socket.
CLOSE_TIMEOUT = 2.0

#: Close codes (RFC 6455 section 7.4.1) for each reason we end a connection.
CLOSE_CODES: dict[str, int] = {
    "exit": 1000,
    protocol.SHUTTING_DOWN: 1001,
    protocol.IDLE_TIMEOUT: 1001,
    protocol.SLOW_CONSUMER: 1008,
    "write_timeout": 1008,
    protocol.TOO_MANY_CONNECTIONS: 1013,
}


class WsTransport:
    """A connection on the WebSocket port."""

    kind = "ws"

    def __init__(self, ws: WebSocketConnection, peer: str) -> None:
        self._ws = ws
        self._raw = raw_socket(ws._stream)
        self.peer = peer
        self.dirty = False

    async def receive(self) -> str | ProtocolError | None:
        try:
            message = await self._ws.get_message()
        except ConnectionClosed:
            return None
        if isinstance(message, bytes):
            return ProtocolError(protocol.BINARY_FRAME, "binary frames are not supported")
        return message

    def frame(self, payload: Payload) -> bytes:
        return payload.ws_frame()

    def send_nowait(self, data: bytes) -> int | None:
        ws = self._ws
        # trio-websocket's own frames (pong, close) hold the lock while sent.
        if self.dirty or ws._stream_lock.locked():
            return None
        return raw_send(self._raw, data)

    async def send_all(self, data: bytes) -> None:
        ws = self._ws
        self.dirty = True
        async with ws._stream_lock:
            try:
                await ws._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise TransportClosed(str(exc)) from None
        self.dirty = False

    async def heartbeat(self, interval: float) -> str:
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as scope:
                try:
                    await self._ws.ping(os.urandom(4))
                except ConnectionClosed:
                    return "eof"
            if scope.cancelled_caught:
                return protocol.IDLE_TIMEOUT

    async def close(self, reason: str, message: str) -> None:
        if self.dirty:
            # A frame was cut off mid-write: no close frame can follow it.
            await self._ws._stream.aclose()
            return
        code = CLOSE_CODES.get(reason, 1000 if reason == "eof" else 1008)
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await self._ws.aclose(code, reason)
        if scope.cancelled_caught:
            await self._ws._stream.aclose()
