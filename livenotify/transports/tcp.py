"""TCP: UTF-8 lines of bounded length (NDJSON or human commands)."""

from __future__ import annotations

import trio

from .. import protocol, reasons
from ..payload import Payload
from ..protocol import LineDecoder, ProtocolError
from .base import PongWaiter
from .sockets import ByteStreamWrites, raw_socket

#: Bytes asked of the socket per read: large enough for a burst of commands,
#: small enough that one connection's read buffer stays modest.
RECEIVE_CHUNK = 16 * 1024
#: How long a closing error line may take to write before we just hang up.
CLOSE_WRITE_TIMEOUT = 1.0


class TcpTransport(ByteStreamWrites):
    """A connection on the TCP port."""

    __slots__ = ("_decoder", "peer")
    kind = "tcp"
    # TCP peers are often `nc`, which cannot answer an application ping.
    # Dead peers are found by TCP keepalive (set on the listening socket)
    # and stuck readers by the write deadline instead.
    probes = False
    human_commands = goodbye_message = True

    def __init__(self, stream: trio.abc.Stream, peer: str, max_line_bytes: int) -> None:
        self._stream = stream
        # None under TLS: then send_nowait never writes, and everything goes
        # through the writer task's send_all on the SSLStream.
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
            self._decoder.receive_data(bytes(data))

    def frame(self, payload: Payload) -> bytes:
        return payload.line()

    def ping_frame(self, waiter: PongWaiter) -> bytes | None:
        return None

    async def close(self, reason: str, message: str) -> None:
        if not self.dirty and not reasons.lookup(reason).quiet:
            line = Payload(protocol.encode_server(protocol.Error(reason, message))).line()
            with trio.move_on_after(CLOSE_WRITE_TIMEOUT):
                try:
                    await self._stream.send_all(line)
                    # Half-close so the peer reads our line before EOF (TLS
                    # cannot: its close_notify comes with aclose).
                    if isinstance(self._stream, trio.abc.HalfCloseableStream):
                        await self._stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await self._stream.aclose()
