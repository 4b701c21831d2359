"""The interface a transport offers the session."""

from __future__ import annotations

from typing import Protocol

from ..payload import Payload
from ..protocol import ProtocolError


class PongWaiter(Protocol):
    def set(self) -> None: ...


class TransportClosed(Exception):
    """The peer is gone; raised by ``send_all`` at the transport boundary."""


class Transport(Protocol):
    #: "tcp" or "ws"
    kind: str
    #: "ip:port" of the peer, for logs and the console.
    peer: str
    #: True while a write is in progress or was interrupted, or a direct
    #: write left part of a frame for the writer task: the stream is then in
    #: the middle of a frame and must be closed without writing more.
    dirty: bool
    #: Whether the hub's heartbeat pings this connection (WebSocket: yes;
    #: TCP peers are often ``nc``, which cannot answer).
    probes: bool
    #: Whether a message that is not JSON is read as a human command line
    #: (``subscribe a b``): TCP, typed into ``nc``; WebSocket is JSON only.
    human_commands: bool
    #: Whether the end of the connection is announced with an in-band
    #: ``goodbye`` message (TCP); WebSocket says why in its close frame.
    goodbye_message: bool

    async def receive(self) -> str | ProtocolError | None:
        """The next text message, a framing error, or None once the peer closed."""
        ...

    def frame(self, payload: Payload) -> bytes:
        """``payload`` framed for this transport (cached on the payload)."""
        ...

    def send_nowait(self, data: bytes) -> int | None:
        """Write what the socket takes now, without waiting: the byte count,
        or None when a write may not start now (one is in progress)."""
        ...

    async def send_all(self, data: bytes) -> None:
        """Write already framed bytes; raise TransportClosed if the peer is
        gone. (The WebSocket transport drops writes to a peer that reset
        the connection instead, so that :meth:`receive` first returns what
        the peer sent before it went; see transports/ws.py.)"""
        ...

    def ping_frame(self, waiter: PongWaiter) -> bytes | None:
        """A framed liveness ping to write now, in order with the data;
        ``waiter.set()`` is called when its answer arrives. None when the
        connection is closing (or the transport does not probe)."""
        ...

    async def close(self, reason: str, message: str) -> None:
        """Say why (a close frame or an error line) where the stream allows, then close."""
        ...
