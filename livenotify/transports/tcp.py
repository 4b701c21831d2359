"""TCP: UTF-8 lines of bounded length (NDJSON or human commands)."""

from __future__ import annotations

import trio

from .. import protocol, reasons
from ..payload import Payload
from ..protocol import LineDecoder, ProtocolError
from .base import PongWaiter, TransportClosed
from .sockets import raw_send, raw_socket

#: Bytes asked of the socket per read: large enough for a burst of commands,
#: small enough that one connection's read buffer stays modest.
RECEIVE_CHUNK = 16 * 1024
#: How long a closing error line may take to write before we just hang up.
CLOSE_WRITE_TIMEOUT = 1.0


class TcpTransport:
    """A connection on the TCP port."""

    __slots__ = ("_decoder", "_raw", "_stream", "dirty", "peer")
    kind = "tcp"
    # TCP peers are often `nc`, which cannot answer an application ping.
    # Dead peers are found by TCP keepalive (set on the listening socket)
    # and stuck readers by the write deadline instead.
    probes = False
    human_commands = goodbye_message = True

    def __init__(self, stream: trio.SocketStream, peer: str, max_line_bytes: int) -> None:
        self._stream = stream
        self._raw = raw_socket(stream)
        self.peer = peer
        self._decoder = LineDecoder(max_line_bytes)
        self.dirty = False

    async def receive(self) -> str | ProtocolError | None:
        while True:
            item = self._decoder.next_line()
            if isinstance(item, protocol.Line):
                return item.text
            if item is not None:
                return item
            try:
                data = await self._stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self._decoder.receive_data(data)

    def frame(self, payload: Payload) -> bytes:
        return payload.line()

    def send_nowait(self, data: bytes) -> int | None:
        if self.dirty:
            return None
        sent = raw_send(self._raw, data)
        if sent and sent < len(data):
            self.dirty = True  # a line's tail is left for the writer
        return sent

    async def send_all(self, data: bytes) -> None:
        self.dirty = True
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed(str(exc)) from None
        self.dirty = False

    def ping_frame(self, waiter: PongWaiter) -> bytes | None:
        return None

    async def close(self, reason: str, message: str) -> None:
        if not self.dirty and not reasons.lookup(reason).quiet:
            line = Payload(protocol.encode_server(protocol.Error(reason, message))).line()
            with trio.move_on_after(CLOSE_WRITE_TIMEOUT):
                try:
                    await self._stream.send_all(line)
                    # Half-close so the peer reads our line before EOF.
                    await self._stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await self._stream.aclose()
