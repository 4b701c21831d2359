"""The interface a transport offers the session."""

from __future__ import annotations

from typing import Protocol

from ..payload import Payload
from ..protocol import ProtocolError


class TransportClosed(Exception):
    """The peer is gone; raised by ``send_all`` at the transport boundary."""


class Transport(Protocol):
    #: "tcp" or "ws"
    kind: str
    #: "ip:port" of the peer, for logs and the console.
    peer: str
    #: True while a write is in progress or was interrupted: the stream is
    #: then in an unknown state and must be closed without writing more.
    dirty: bool

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
        """Write already framed bytes; raise TransportClosed if the peer is gone."""
        ...

    async def heartbeat(self, interval: float) -> str:
        """Probe liveness forever; return a reason code when the peer is dead."""
        ...

    async def close(self, reason: str, message: str) -> None:
        """Say why (a close frame or an error line) where the stream allows, then close."""
        ...
