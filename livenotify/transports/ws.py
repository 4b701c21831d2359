"""WebSocket: text frames on wsproto, with pre-framed broadcast writes.

The opening handshake is HTTP and lives in :mod:`.http` (the front door);
it hands over the socket stream and any bytes read past the handshake. From
there this transport does all the WebSocket work in the connection's one
task: the session's reader calls :meth:`receive`, which reads the socket,
feeds wsproto's frame parser (:class:`wsproto.frame_protocol.FrameProtocol`:
unmasking, UTF-8 validation, close codes), answers pings, matches the
heartbeat's pongs and assembles text messages under a size limit counted in
bytes. The connection state (open, closing, closed) is ours.

Outgoing notifications bypass wsproto: a server-to-client text frame is
unmasked, so :meth:`Payload.ws_frame` builds it once for every subscriber
and it is written straight to the socket. Control frames we send (pong,
close) are built by wsproto and written through the same ordered path,
under the connection's :class:`StreamLock`, so none ever lands inside a
frame. We only send whole, unfragmented, uncompressed frames (no extension
is negotiated), so wsproto's outgoing state is not affected by the bypass.

Liveness pings are the hub's one heartbeat task for all connections:
:meth:`WsTransport.ping_frame` builds the ping and remembers its waiter,
which :meth:`receive` sets when the matching pong arrives.
"""

from __future__ import annotations

import itertools
import struct

import trio
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from .. import protocol, reasons
from ..payload import Payload
from ..protocol import ProtocolError
from .base import PongWaiter, TransportClosed
from .sockets import raw_send, raw_socket

#: Bytes asked of the socket per read: a few frames' worth, so that one
#: connection's read buffer stays modest.
RECEIVE_CHUNK = 16 * 1024
#: How long the closing handshake may take before we drop the socket.
CLOSE_TIMEOUT = 2.0
#: Bytes we read (and discard) while waiting for the peer's close frame:
#: enough to take in what a producer sent just before closing, so that our
#: close is a FIN and not a reset, without reading forever.
CLOSE_DRAIN_BYTES = 1024 * 1024

#: Ping payloads: 4 bytes, unique among a connection's recent pings.
_ping_ids = itertools.count()


class StreamLock:
    """A FIFO lock without an owner task, for one WebSocket stream.

    :meth:`hold` is a synchronous acquire for a lock known to be free: a
    direct (non-blocking) write that leaves part of a frame unsent takes the
    lock there and then, and the writer task releases it once the tail is
    out. :meth:`release` hands the lock to the first waiter.
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        # Made on first contention only: most connections never wait.
        self._waiters: trio.lowlevel.ParkingLot | None = None

    def locked(self) -> bool:
        return self._held

    def hold(self) -> None:
        assert not self._held
        self._held = True

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._held:
            self._held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._waiters is None:
            self._waiters = trio.lowlevel.ParkingLot()
        await self._waiters.park()  # woken by release(), holding the lock

    def release(self) -> None:
        if not (self._waiters and self._waiters.unpark(count=1)):
            self._held = False


class WsTransport:
    """An open WebSocket connection on the front door's port."""

    __slots__ = (
        "_eof", "_fail", "_gone", "_limit", "_lock", "_parts", "_peer_code", "_ping", "_proto",
        "_raw", "_size", "_state", "_stream", "_tail", "dirty", "peer",
    )  # fmt: skip
    kind = "ws"
    probes = True
    human_commands = goodbye_message = False

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: str,
        max_message_bytes: int,
        trailing: bytes = b"",
        eof: bool = False,
    ) -> None:
        """``trailing``: bytes that came after the handshake request (and
        ``eof``: the peer's EOF after them), already read by the front door."""
        self._stream = stream
        # wsproto's frame layer, without its Connection wrapper (whose event
        # deque alone is 760 bytes per idle connection): the connection
        # state is ours (a ConnectionState), as are the events.
        self._proto = FrameProtocol(client=False, extensions=[])
        self._state = ConnectionState.OPEN
        if trailing:
            self._proto.receive_bytes(trailing)
        self._eof = eof
        #: The code of the peer's close frame, echoed in ours.
        self._peer_code: int | None = None
        self._raw = raw_socket(stream)
        self._limit = max_message_bytes
        self.peer = peer
        self.dirty = False
        self._lock = StreamLock()
        #: The message being assembled from its frames, and its size in bytes.
        self._parts: list[str] | None = None
        self._size = 0
        #: The liveness ping in flight: its payload and its waiter.
        self._ping: tuple[bytes, PongWaiter] | None = None
        #: Close code for a protocol violation of the peer (the reason we end).
        self._fail: tuple[int, str] | None = None
        #: A write found the peer gone (reset, broken pipe): see send_all.
        self._gone = False
        #: A direct write left part of a frame unsent and took the lock for
        #: the writer task, whose next send_all starts with the rest.
        self._tail = False

    # -- reading -------------------------------------------------------------

    async def receive(self) -> str | ProtocolError | None:
        proto = self._proto
        while True:
            try:
                for frame in proto.received_frames():
                    opcode = frame.opcode
                    if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                        result = self._assemble(frame.payload, frame.message_finished)
                        if result is not None:
                            return result
                        if self._fail is not None:
                            return None
                    elif opcode is Opcode.PING:
                        assert isinstance(frame.payload, bytes | bytearray)
                        await self._send_control(bytes(proto.pong(bytes(frame.payload))))
                    elif opcode is Opcode.PONG:
                        ping = self._ping
                        if ping is not None and frame.payload == ping[0]:
                            self._ping = None
                            ping[1].set()
                    elif opcode is Opcode.CLOSE:
                        assert isinstance(frame.payload, tuple)
                        self._peer_code = frame.payload[0]
                        self._state = ConnectionState.REMOTE_CLOSING
                        return None
            except ParseFailed as exc:
                # We close with its code (1002 protocol error, 1007 invalid
                # UTF-8); the rest of the stream cannot be parsed.
                self._fail = (exc.code, str(exc) or "protocol error")
                return None
            if self._eof:
                self._state = ConnectionState.CLOSED
                return None
            try:
                data = await self._stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if data:
                proto.receive_bytes(bytes(data))
            else:
                self._eof = True

    def _assemble(self, data: object, finished: bool) -> str | ProtocolError | None:
        """Add a frame's data to the message; the message once it is whole."""
        if isinstance(data, str):
            # The limit is in UTF-8 bytes; encoding only when the length in
            # characters cannot decide (a character is 1 to 4 bytes).
            n = len(data)
            self._size += n if n * 4 <= self._limit - self._size else len(data.encode())
        else:
            assert isinstance(data, bytes | bytearray)
            self._size += len(data)
        if self._size > self._limit:
            self._fail = (
                CloseReason.MESSAGE_TOO_BIG,
                protocol.MESSAGE_TOO_LARGE,
            )
            self._parts = None
            return None
        if not isinstance(data, str):
            if not finished:
                return None
            self._size = 0
            return ProtocolError(protocol.BINARY_FRAME, "binary frames are not supported")
        if finished:
            parts, self._parts, self._size = self._parts, None, 0
            if parts is None:
                return data
            parts.append(data)
            return "".join(parts)
        if self._parts is None:
            self._parts = [data]
        else:
            self._parts.append(data)
        return None

    # -- writing -------------------------------------------------------------

    def frame(self, payload: Payload) -> bytes:
        return payload.ws_frame()

    def send_nowait(self, data: bytes) -> int | None:
        lock = self._lock
        # A control frame is being written (the lock is held), or we closed.
        if self.dirty or lock.locked() or self._state is not ConnectionState.OPEN:
            return None
        if self._gone:
            return len(data)  # dropped: see send_all
        sent = raw_send(self._raw, data)
        if sent and sent < len(data):
            # Part of a frame is out: nothing else may be written until the
            # writer task has sent the rest (send_all releases the lock).
            self.dirty = self._tail = True
            lock.hold()
        return sent

    async def send_all(self, data: bytes) -> None:
        """The writer task's write, under the stream lock (which it already
        holds when ``data`` starts with a frame's unsent tail). After a
        failed or cancelled write the lock stays held and ``dirty`` stays
        set, until :meth:`close`.

        A peer that is gone ends the connection through the reader, not
        here: what it sent before it went (a producer's burst, then a reset
        because it left our replies unread) is still in the kernel's receive
        queue, and the reader takes all of it before it meets the end. So
        writes are dropped from then on, and TransportClosed is only raised
        for a stream we closed ourselves.
        """
        if self._tail:
            self._tail = False  # the lock is ours already
        else:
            await self._lock.acquire()
        await self._locked_write(data)

    async def _send_control(self, data: bytes) -> None:
        """A pong or close frame, in order with the data frames: after the
        frame being written, never inside it."""
        await self._lock.acquire()
        try:
            await self._locked_write(data)
        except TransportClosed:
            pass  # the next read meets the end of the stream

    async def _locked_write(self, data: bytes) -> None:
        if self._gone:
            self._lock.release()
            return
        self.dirty = True
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError:
            self._gone = True
        except trio.ClosedResourceError as exc:
            raise TransportClosed(str(exc)) from None
        self.dirty = False
        self._lock.release()

    def ping_frame(self, waiter: PongWaiter) -> bytes | None:
        if self._state is not ConnectionState.OPEN:
            return None
        payload = struct.pack("!I", next(_ping_ids) & 0xFFFFFFFF)
        self._ping = (payload, waiter)
        return b"\x89\x04" + payload  # FIN + ping, unmasked, 4 bytes

    # -- closing -------------------------------------------------------------

    async def close(self, reason: str, message: str) -> None:
        if self._gone:
            await self._stream.aclose()
            return
        if self.dirty:
            # A frame was cut off mid-write: no close frame can follow it.
            # Then let whoever waits for the lock meet the closed stream.
            await self._stream.aclose()
            self.dirty = False
            self._lock.release()
            return
        state = self._state
        code: int | None
        if self._fail is not None:
            code, text = self._fail
        elif state is ConnectionState.REMOTE_CLOSING:
            code, text = self._peer_code, ""  # echo the peer's code
        else:
            code, text = reasons.lookup(reason).close_code, reason
        with trio.move_on_after(CLOSE_TIMEOUT):
            if state is ConnectionState.OPEN or state is ConnectionState.REMOTE_CLOSING:
                # wsproto caps the reason at the 123 bytes RFC 6455 allows.
                frame = bytes(self._proto.close(code, text or None))
                self._state = (
                    ConnectionState.LOCAL_CLOSING
                    if state is ConnectionState.OPEN
                    else ConnectionState.CLOSED
                )
                await self._send_control(frame)
            if self._state is ConnectionState.LOCAL_CLOSING:
                await self._await_close()
        await self._stream.aclose()

    async def _await_close(self) -> None:
        """Read until the peer's close frame (or EOF), discarding messages:
        closing a socket with unread data would reset the connection and
        could cost the peer our close frame."""
        drained = 0
        if self._fail is not None:
            # After a protocol violation the stream cannot be parsed: say
            # we are done (FIN) and take whatever comes until the peer's EOF.
            stream = self._stream
            if not isinstance(stream, trio.abc.HalfCloseableStream):
                return
            try:
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
        while not self._eof and drained < CLOSE_DRAIN_BYTES:
            if self._fail is None:
                try:
                    for frame in self._proto.received_frames():
                        if frame.opcode is Opcode.CLOSE:
                            self._state = ConnectionState.CLOSED
                            return
                except ParseFailed:
                    self._fail = (CloseReason.PROTOCOL_ERROR, "after close")
            try:
                data = await self._stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            drained += len(data)
            if self._fail is None:
                self._proto.receive_bytes(bytes(data))
