"""Server-Sent Events: ``GET /sse?events=a,b&since=S`` on the front door.

The route (``routes.sse``) checks the request (:func:`check_request`) and
answers with a takeover:
the front door hands the connection to :func:`stream_events`, which writes
the response head and runs an ordinary session on an :class:`SseTransport`.
So an SSE subscriber is a hub subscriber like any other: the same bounded
queue, slow-consumer policy, coalesced writes and connection caps.

The body is close-delimited (``Connection: close``, no length, no chunked
coding): each notification is written as the bytes
:meth:`Payload.sse_frame` builds once per notification and every SSE
subscriber shares. The hub's heartbeat writes a comment line (``: ping``)
every :data:`HEARTBEAT_INTERVAL` seconds (or ``--idle-timeout``, when
shorter), which keeps proxies from timing the stream out; a peer that is
gone is found by the write failing, a stuck one by the write deadline or
its queue filling up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

import trio

from .. import protocol, reasons
from ..access import Grant
from ..config import Limits
from ..history.positions import InvalidPosition, parse_since
from ..payload import Payload, sse_event
from ..protocol import ProtocolError
from .base import PongWaiter, Transport
from .sockets import ByteStreamWrites, raw_socket

#: Seconds between heartbeat comments (at most; ``--idle-timeout`` if shorter).
HEARTBEAT_INTERVAL: Final = 15.0
#: The heartbeat comment: a line starting with ``:`` is ignored by clients.
PING: Final = b": ping\n\n"
#: Bytes read (and discarded) per read: a client sends nothing on an SSE stream.
RECEIVE_CHUNK = 4 * 1024
#: Bytes a client may send on its stream before it is closed.
MAX_DISCARD = 64 * 1024
#: How long the closing ``error`` event may take to write.
CLOSE_WRITE_TIMEOUT = 1.0

HEAD: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    # Tell nginx not to buffer the stream.
    b"x-accel-buffering: no\r\n"
    b"connection: close\r\n"
    b"\r\n"
)


class SseTransport(ByteStreamWrites):
    """An SSE stream: written to only; the peer's EOF ends it."""

    __slots__ = ("peer",)
    kind = "sse"
    # Probed by the heartbeat, whose "ping" is a comment needing no answer.
    probes = True
    human_commands = goodbye_message = False

    def __init__(self, stream: trio.abc.Stream, peer: str) -> None:
        self._stream = stream
        self._raw = raw_socket(stream)
        self.peer = peer
        self.dirty = False

    async def receive(self) -> str | ProtocolError | None:
        """Wait for the peer to close: None. What it sends is discarded, up
        to :data:`MAX_DISCARD` bytes; past that the stream is ended too (an
        SSE client has nothing to say)."""
        discarded = 0
        while discarded <= MAX_DISCARD:
            try:
                data = await self._stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            discarded += len(data)
        return None

    def frame(self, payload: Payload) -> bytes:
        return payload.sse_frame()

    def ping_frame(self, waiter: PongWaiter) -> bytes:
        # No answer comes back on SSE: the comment counts as answered (a
        # dead peer fails the write instead).
        waiter.set()
        return PING

    async def close(self, reason: str, message: str) -> None:
        """An ``error`` event saying why (unless the stream is mid-message or
        the reason is an ordinary one), then the end of the body."""
        if not self.dirty and not reasons.lookup(reason).quiet:
            text = protocol.encode_server(protocol.Error(reason, message))
            with trio.move_on_after(CLOSE_WRITE_TIMEOUT):
                try:
                    await self._stream.send_all(sse_event(text))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await self._stream.aclose()


class SessionStarter(Protocol):
    """Runs a session on a transport (:meth:`Server.start_session`)."""

    async def start_session(
        self, transport: Transport, events: tuple[str, ...], grant: Grant, since: str | None
    ) -> None: ...


class Catalog(Protocol):
    """What the request check needs of the hub."""

    @property
    def catalog(self) -> tuple[str, ...]: ...

    def unknown(self, events: Sequence[str]) -> list[str]: ...


def requested_events(query: Mapping[str, list[str]], limit: int) -> tuple[str, ...]:
    """``?events=a,b`` (repeatable); none given: every event (``*``)."""
    values = query.get("events")
    if values is None:
        return (protocol.ALL_EVENTS,)
    names = [n for value in values for n in value.split(",") if n]
    return tuple(dict.fromkeys(names))[:limit] or (protocol.ALL_EVENTS,)


def requested_since(query: Mapping[str, list[str]], last_event_id: str | None) -> str | None:
    """Where to resume: ``Last-Event-ID`` (an ``E:N`` id we sent) or
    ``?since=``; None for live only. Raises :class:`ProtocolError`
    ``invalid_position`` for a malformed value."""
    value = last_event_id
    if value is None:
        values = query.get("since")
        value = values[0] if values else None
    if value is None or value == "":
        return None
    try:
        parse_since(value, time.time())
        return value
    except InvalidPosition as exc:
        raise ProtocolError(exc.code, str(exc)) from None


def check_request(
    hub: Catalog, limits: Limits, query: Mapping[str, list[str]], last_event_id: str | None
) -> tuple[tuple[str, ...], str | None]:
    """The events and ``since`` of a ``GET /sse``; :class:`ProtocolError`
    (answered as plain JSON, before any stream) for a bad one."""
    events = requested_events(query, limits.max_events_per_message)
    for event in events:
        protocol.check_event_name(event, limits, allow_all=True)
    unknown = hub.unknown(events)
    if unknown:
        raise ProtocolError(
            protocol.UNKNOWN_EVENT,
            f"unknown event {unknown[0]!r}; available: {', '.join(hub.catalog)}",
        )
    return events, requested_since(query, last_event_id)


async def stream_events(
    app: SessionStarter,
    events: Sequence[str],
    since: str | None,
    grant: Grant,
    stream: trio.abc.Stream,
    peer: str,
) -> None:
    """Write the response head, then serve the stream as a session."""
    # The session replays from ``since`` (a `subscribed` event, then the
    # missed notifications) before going live, as a WebSocket's ?since= does.
    try:
        await stream.send_all(HEAD)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    await app.start_session(SseTransport(stream, peer), tuple(events), grant, since)
