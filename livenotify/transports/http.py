"""The front door: HTTP/1.1 (h11) on the WebSocket port, one task per connection.

A connection is read as HTTP requests. A request with ``Upgrade:
websocket`` (on any path: the seeds connect to ``/``) is the WebSocket
opening handshake: answered with 101, after which the connection belongs to
a :class:`~livenotify.transports.ws.WsTransport` and a session. Any other
request is routed by :mod:`.routes` (the route table) and answered; the
connection is kept alive for up to ``Limits.max_requests_per_connection``
requests.

Limits: the request head (and, for a WebSocket, the whole handshake) must
arrive within ``--handshake-timeout``, and so must each further request on
a kept-alive connection; a request body within the same time again (a
request that never completes is cut: slowloris); the head is bounded in
bytes and header count (``Limits.max_http_head_bytes`` and
``max_http_headers``: 431), the body by ``--max-message-bytes`` (413).
"""

from __future__ import annotations

import http
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import trio
from wsproto.utilities import generate_accept_token

from .. import protocol
from ..config import Config
from ..protocol import ProtocolError
from ..ratelimit import TokenBucket
from .routes import BAD_REQUEST, App, Request, Response, error_response, route
from .ws import WsTransport

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read while parsing HTTP.
RECEIVE_CHUNK = 16 * 1024
#: How long an error response may take to write before we hang up.
RESPONSE_WRITE_TIMEOUT = 2.0
#: After an error answer, how long and how much we read (and discard) of
#: what the client is still sending, so that it sees the answer.
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 256 * 1024
#: The WebSocket protocol version we speak (RFC 6455).
WEBSOCKET_VERSION = b"13"

#: Runs a session on an open WebSocket: (transport, initial events).
StartSession = Callable[[WsTransport, tuple[str, ...]], Awaitable[None]]


@dataclass
class _Exchange:
    """One connection's HTTP state while it is HTTP."""

    stream: trio.abc.Stream
    peer: str
    conn: h11.Connection
    refuse: str | None = None
    #: The method of the request being answered (a HEAD response has no body).
    method: bytes = b""

    _bucket: TokenBucket | None = None

    def bucket(self, config: Config) -> TokenBucket:
        """The connection's rate limit (made with its first routed request)."""
        if self._bucket is None:
            limits = config.limits
            self._bucket = TokenBucket(limits.rate_per_second, limits.rate_burst)
        return self._bucket

    async def next_event(self) -> Any:
        """The next h11 event, reading as needed; ConnectionClosed at EOF."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            conn.receive_data(bytes(data))

    async def send(self, *events: Any) -> None:
        data = b"".join(self.conn.send(e) or b"" for e in events)
        await self.stream.send_all(data)


class FrontDoor:
    """Serves connections on the WebSocket port (see the module docstring)."""

    def __init__(self, config: Config, start_session: StartSession, app: App) -> None:
        self.config = config
        self._start_session = start_session
        #: What route handlers may use (the server: hub, config, storage...).
        self.app = app

    async def serve(self, stream: trio.abc.Stream, peer: str, *, refuse: str | None = None) -> None:
        """Serve one connection until it closes; never raises for the peer's sake.

        With ``refuse`` (an error code: ``too_many_connections``), the first
        request is only answered with that error: a 503 for HTTP, a close
        frame (1013) right after the handshake for a WebSocket.
        """
        try:
            # No reference to the HTTP state (h11's buffers, the request)
            # outlives _serve: a WebSocket's session runs without it.
            handoff = await self._serve(_Exchange(stream, peer, self._http(), refuse=refuse))
            if handoff is not None:
                await self._start_session(*handoff)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # One connection's bug must not reach the shared nursery (and
            # take every other client down): log it and close this one.
            log.exception("front door %s failed", peer)
        finally:
            await stream.aclose()

    def _http(self) -> h11.Connection:
        limit = self.config.limits.max_http_head_bytes
        return h11.Connection(h11.SERVER, max_incomplete_event_size=limit)

    async def _serve(self, ex: _Exchange) -> tuple[WsTransport, tuple[str, ...]] | None:
        """Answer HTTP requests until the connection ends or turns into a
        WebSocket: then the transport and its initial events."""
        conn, timeout = ex.conn, self.config.handshake_timeout
        cap = self.config.limits.max_requests_per_connection
        for served in range(1, cap + 1):
            request: Request | None = None
            with trio.move_on_after(timeout):
                try:
                    request = await self._read_request(ex)
                except h11.RemoteProtocolError as exc:
                    await self._refuse(ex, exc.error_status_hint, BAD_REQUEST, str(exc))
                    return None
                except ProtocolError as exc:
                    await self._refuse(ex, None, exc.code, exc.message)
                    return None
            if request is None:
                return None  # closed, or the deadline passed (slowloris): cut
            if request.websocket:
                return await self._upgrade(ex, request)
            if ex.refuse is not None:
                await self._refuse(ex, None, ex.refuse, "connection limit reached")
                return None
            request.bucket = ex.bucket(self.config)
            response = await route(self.app, request)
            if served == cap:
                response.close = True
            await self._respond(ex, response)
            if response.close or conn.our_state is not h11.DONE:
                return None
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return None  # the client will not keep the connection alive
        return None

    async def _read_request(self, ex: _Exchange) -> Request | None:
        """Read one request (head and body) or None when the peer closed."""
        event = await ex.next_event()
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed (or PAUSED after a close)
        ex.method = event.method
        max_headers = self.config.limits.max_http_headers
        if len(event.headers) > max_headers:
            raise h11.RemoteProtocolError(f"more than {max_headers} headers", 431)
        request = Request.from_h11(event)
        if request.websocket:
            return request  # a GET handshake: no body to read
        limit = self.config.limits.max_message_bytes
        length = request.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ProtocolError(protocol.MESSAGE_TOO_LARGE, f"body longer than {limit} bytes")
        if ex.conn.they_are_waiting_for_100_continue:
            # curl asks before sending a body over 1 KiB.
            await ex.send(h11.InformationalResponse(status_code=100, headers=[]))
        body = bytearray()
        while True:
            event = await ex.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    raise ProtocolError(
                        protocol.MESSAGE_TOO_LARGE, f"body longer than {limit} bytes"
                    )
            elif isinstance(event, h11.EndOfMessage):
                request.body = bytes(body)
                return request
            else:
                return None  # closed mid-body

    async def _respond(self, ex: _Exchange, response: Response) -> None:
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *response.headers,
        ]
        if response.close:
            headers.append((b"connection", b"close"))
        with trio.move_on_after(self.config.write_timeout):
            await ex.send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                ),
                *([] if ex.method == b"HEAD" else [h11.Data(data=response.body)]),
                h11.EndOfMessage(),
            )

    async def _refuse(self, ex: _Exchange, status: int | None, code: str, message: str) -> None:
        """Answer a request we cannot serve, and close (h11 may not be able to
        go on: the stream's position in the request is unknown)."""
        response = error_response(code, message, status)
        response.close = True
        if ex.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with trio.move_on_after(RESPONSE_WRITE_TIMEOUT):
            try:
                await self._respond(ex, response)
            except h11.LocalProtocolError:
                return
            await _linger(ex.stream)

    async def _upgrade(
        self, ex: _Exchange, request: Request
    ) -> tuple[WsTransport, tuple[str, ...]] | None:
        """Complete the WebSocket handshake and hand the connection over."""
        problem = _handshake_problem(request)
        if problem is not None:
            await self._refuse(ex, 400, BAD_REQUEST, problem)
            return None
        conn = ex.conn
        # A GET with Upgrade: h11 reports the end of the (empty) body, then
        # pauses for the protocol switch.
        with trio.move_on_after(self.config.handshake_timeout):
            event = await ex.next_event()
            if isinstance(event, h11.EndOfMessage):
                event = await ex.next_event()
            if event is not h11.PAUSED:
                return None
            key = request.header(b"sec-websocket-key") or ""
            await ex.send(
                h11.InformationalResponse(
                    status_code=101,
                    headers=[
                        (b"upgrade", b"websocket"),
                        (b"connection", b"Upgrade"),
                        (b"sec-websocket-accept", generate_accept_token(key.encode())),
                    ],
                    reason=b"Switching Protocols",
                )
            )
        if conn.our_state is not h11.SWITCHED_PROTOCOL:
            return None  # the deadline passed mid-handshake
        trailing, closed = conn.trailing_data
        limits = self.config.limits
        transport = WsTransport(ex.stream, ex.peer, limits.max_message_bytes, trailing, closed)
        if ex.refuse is not None:
            await transport.close(ex.refuse, "connection limit reached")
            return None
        return transport, query_events(request.target, limits.max_events_per_message)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _handshake_problem(request: Request) -> str | None:
    """Why a WebSocket opening handshake is not acceptable, or None."""
    if request.method != "GET":
        return "a WebSocket handshake is a GET request"
    tokens = (request.header(b"connection") or "").lower().replace(" ", "").split(",")
    if "upgrade" not in tokens:
        return "a WebSocket handshake needs 'Connection: Upgrade'"
    if not request.header(b"sec-websocket-key"):
        return "a WebSocket handshake needs Sec-WebSocket-Key"
    if (request.header(b"sec-websocket-version") or "").encode() != WEBSOCKET_VERSION:
        return "only WebSocket version 13 is supported"
    return None


def query_events(target: str, limit: int) -> tuple[str, ...]:
    """The events a WebSocket starts subscribed to, from its URL query.

    ``/?events=a,b`` -> ("a", "b"); ``/?events=`` (empty) -> () (none: the
    form for producers, which then have nothing to read); no ``events``
    parameter -> ("*",) (every event).
    """
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query, keep_blank_values=True)
    if "events" not in query:
        return (protocol.ALL_EVENTS,)
    names = [n for value in query["events"] for n in value.split(",") if n]
    return tuple(dict.fromkeys(names))[:limit]


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then take what the client is still sending (the rest of
    a refused body) until its EOF, within bounds: closing with unread data
    would reset the connection, and the client could lose our answer."""
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    drained = 0
    with trio.move_on_after(LINGER_TIMEOUT):
        try:
            await stream.send_eof()
            while drained < LINGER_BYTES:
                data = await stream.receive_some(RECEIVE_CHUNK)
                if not data:
                    return
                drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
