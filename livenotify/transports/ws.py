"""WebSocket: text frames via trio-websocket, with pre-framed broadcast writes.

trio-websocket handles the handshake, reading, answering pings and the close
handshake. Outgoing messages bypass its per-message ``send_message`` (which
runs wsproto for every frame of every subscriber): a server-to-client text
frame is unmasked, so :meth:`Payload.ws_frame` builds it once for everyone
and we write it straight to the stream under the connection's own lock,
which keeps it from interleaving with trio-websocket's control frames. We
only ever send whole, unfragmented, uncompressed frames (no extension is
negotiated), so wsproto's connection state is unaffected.

The lock is our :class:`StreamLock` in place of trio-websocket's
``StrictFIFOLock``: it is not owned by a task, so a direct (non-blocking)
write that leaves part of a frame unsent takes it there and then, and the
writer task releases it once the tail is out. No pong or close frame can
then land inside one of our frames.

Liveness pings are the hub's :class:`~livenotify.hub.Heartbeat` (one task
for all connections): :meth:`WsTransport.ping_frame` files the probe as the
ping's waiter in trio-websocket's table, which sets it when the pong comes.
"""

from __future__ import annotations

import itertools
import struct
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState

from .. import protocol
from ..payload import Payload
from ..protocol import ProtocolError
from .base import PongWaiter, TransportClosed
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


#: Ping payloads: 4 bytes, unique among a connection's pings in flight.
_ping_ids = itertools.count()


class StreamLock:
    """A FIFO lock without an owner task, for one WebSocket stream.

    Offers what trio-websocket uses of its ``StrictFIFOLock`` (``async
    with``) and ``locked()``, plus :meth:`hold`, a synchronous acquire for a
    lock known to be free; :meth:`release` hands the lock to the first waiter.
    ``before`` is the lock it replaces if that one is held at the time (a
    pong being written right after the handshake): it is waited for first.
    """

    __slots__ = ("_before", "_held", "_waiters")

    def __init__(self, before: trio.StrictFIFOLock | None = None) -> None:
        self._before = before if before is not None and before.locked() else None
        self._held = False
        self._waiters: trio.lowlevel.ParkingLot | None = None

    def locked(self) -> bool:
        if self._before is not None:
            if self._before.locked():
                return True
            self._before = None
        return self._held

    def hold(self) -> None:
        assert not self.locked()
        self._held = True

    async def acquire(self) -> None:
        if self._before is not None:
            async with self._before:
                pass
            self._before = None
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

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class _Handshaken:
    """Stands in for wsproto's handshake object once the connection is open.

    wsproto keeps the handshake (an h11 connection with its buffers, the
    request) for the connection's life and only asks it for ``events()``,
    which are all delivered by then.
    """

    __slots__ = ()

    def events(self) -> Iterator[Any]:
        return iter(())


_HANDSHAKEN = _Handshaken()


class _Events(list):  # type: ignore[type-arg]
    """wsproto's queue of out-of-band events (only an abnormal closure ever
    lands there): an empty list is 56 bytes where an empty deque is 760."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class WsTransport:
    """A connection on the WebSocket port."""

    __slots__ = ("_lock", "_raw", "_ws", "dirty", "peer")
    kind = "ws"
    probes = True
    human_commands = goodbye_message = False

    def __init__(self, ws: WebSocketConnection, peer: str) -> None:
        self._ws = ws
        self._raw = raw_socket(ws._stream)
        self.peer = peer
        self.dirty = False
        self._lock = StreamLock(ws._stream_lock)
        ws._stream_lock = self._lock  # type: ignore[assignment]
        # Memory per idle connection: drop what wsproto only needed for the
        # handshake, and its 760-byte empty deque (both are private; each
        # step checks the shape it expects and is skipped otherwise).
        proto = ws._wsproto
        conn = proto.connection
        if conn is not None:
            if not getattr(proto.handshake, "_events", True):
                proto.handshake = _HANDSHAKEN  # type: ignore[assignment]
            if isinstance(getattr(conn, "_events", None), deque) and not conn._events:
                conn._events = _Events()  # type: ignore[assignment]

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
        lock = self._lock
        # trio-websocket's own frames (pong, close) hold the lock while sent;
        # after its close frame nothing may follow.
        if self.dirty or lock.locked() or self._ws._close_reason is not None:
            return None
        sent = raw_send(self._raw, data)
        if sent and sent < len(data):
            # Part of a frame is out: nothing else may be written until the
            # writer task has sent the rest (send_all releases the lock).
            self.dirty = True
            lock.hold()
        return sent

    async def send_all(self, data: bytes) -> None:
        """Write under the stream lock. ``dirty`` means we already hold it
        (a frame's tail is due); after a failed or cancelled write it stays
        held and ``dirty`` stays set, until :meth:`close`."""
        lock = self._lock
        if not self.dirty:
            await lock.acquire()
            self.dirty = True
        try:
            await self._ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed(str(exc)) from None
        self.dirty = False
        lock.release()

    def ping_frame(self, waiter: PongWaiter) -> bytes | None:
        ws = self._ws
        if ws._close_reason is not None or ws._wsproto.state != ConnectionState.OPEN:
            return None
        payload = struct.pack("!I", next(_ping_ids) & 0xFFFFFFFF)
        ws._pings[payload] = waiter  # type: ignore[assignment]
        return b"\x89\x04" + payload  # FIN + ping, unmasked, 4 bytes

    async def close(self, reason: str, message: str) -> None:
        if self.dirty:
            # A frame was cut off mid-write: no close frame can follow it.
            # Then let whoever waits for the lock meet the closed stream.
            await self._ws._stream.aclose()
            self.dirty = False
            self._lock.release()
            return
        code = CLOSE_CODES.get(reason, 1000 if reason == "eof" else 1008)
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await self._ws.aclose(code, reason)
        if scope.cancelled_caught:
            await self._ws._stream.aclose()
