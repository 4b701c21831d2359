"""The front door's HTTP routes: one table from method and path to a handler.

To add an endpoint, write ``async def handler(app: App, request: Request)
-> Response`` (``app`` is the running server: its hub, config...)
and add one :class:`Route` line to :data:`ROUTES` (a path ending in ``/``
with ``prefix=True`` matches everything under it, as ``/publish/<event>``
does). A WebSocket upgrade never gets here: :mod:`.http` takes it first.

Errors are the protocol's ``{"type":"error","code":...,"message":...}``
object; the HTTP status comes from the code, in one table
(:data:`HTTP_STATUS`).
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import h11
import trio

from .. import metrics, protocol, ready, recovery, web
from ..access import ANONYMOUS, request_token
from ..protocol import ProtocolError
from ..ratelimit import TokenBucket
from . import sse

if TYPE_CHECKING:
    from ..access import Authority, Grant
    from ..config import Config
    from ..hub import Hub
    from ..mail import MailService
    from ..optin import OptIn
    from ..stats import Snapshot
    from ..storage import StorageBridge
    from .base import Transport


class App(Protocol):
    """What handlers may use of the running server (:class:`~livenotify.server.Server`)."""

    config: Config
    hub: Hub
    #: Token checks: ``app.access.authorize(request)`` is the request's grant.
    access: Authority
    storage: StorageBridge | None
    #: Double opt-in (``GET /confirm``) and the store it confirms in.
    optin: OptIn
    mail: MailService | None
    metrics: metrics.Metrics
    canary: ready.Canary

    def stats(self) -> Snapshot:
        """The one snapshot of the server's counters (``/metrics``)."""
        ...

    async def start_session(
        self, transport: Transport, events: tuple[str, ...], grant: Grant, since: str | None
    ) -> None:
        """Serve ``transport`` as a session subscribed to ``events`` (SSE)."""
        ...


#: Takes the connection over after a response (SSE): (stream, peer).
Takeover = Callable[[trio.abc.Stream, str], Awaitable[None]]


log = logging.getLogger(__name__)

# Error codes of the front door only (the others are the protocol's).
NOT_FOUND: Final = "not_found"
METHOD_NOT_ALLOWED: Final = "method_not_allowed"
BAD_REQUEST: Final = "bad_request"
#: The backplane refused the publish (the shared log is unreachable / full).
BACKEND_UNAVAILABLE: Final = protocol.BACKEND_UNAVAILABLE
BUSY: Final = protocol.BUSY

#: The HTTP status of each error code; a code not listed here is a 400 (the
#: client sent something we will not accept).
HTTP_STATUS: Final[dict[str, int]] = {
    protocol.FORBIDDEN: 403,
    NOT_FOUND: 404,
    protocol.UNKNOWN_EVENT: 404,
    METHOD_NOT_ALLOWED: 405,
    protocol.MESSAGE_TOO_LARGE: 413,
    protocol.RATE_LIMITED: 429,
    BUSY: 503,
    protocol.STORAGE_BUSY: 503,
    BACKEND_UNAVAILABLE: 503,
    protocol.TOO_MANY_CONNECTIONS: 503,
    protocol.SHUTTING_DOWN: 503,
}

JSON: Final = b"application/json"


@dataclass
class Request:
    """What a handler sees of one HTTP request."""

    method: str
    target: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    #: An ``Upgrade: websocket`` request (handled before routing).
    websocket: bool = False
    #: The connection's rate limit (messages per second, as on the other
    #: transports); set by the front door before routing.
    bucket: TokenBucket | None = None

    @classmethod
    def from_h11(cls, event: h11.Request) -> Request:
        target = event.target.decode("ascii", "replace")
        path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
        upgrade = any(
            name == b"upgrade" and value.strip().lower() == b"websocket"
            for name, value in event.headers
        )
        return cls(event.method.decode("ascii", "replace"), target, path,
                   list(event.headers), websocket=upgrade)  # fmt: skip

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.target).query,
                                     keep_blank_values=True)  # fmt: skip


@dataclass
class Response:
    """A whole response; :mod:`.http` adds Content-Length and Connection."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Close the connection after this response.
    close: bool = False
    #: Instead of this response, the connection goes to ``takeover``, which
    #: writes its own head (a stream: SSE).
    takeover: Takeover | None = None


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, protocol.encode(obj).encode())


def error_response(code: str, message: str, status: int | None = None) -> Response:
    """The error object, with the status :data:`HTTP_STATUS` gives its code."""
    body = protocol.encode_server(protocol.Error(code, message)).encode()
    return Response(status if status is not None else HTTP_STATUS.get(code, 400), body)


# -- handlers ----------------------------------------------------------------

Handler = Callable[["App", Request], Awaitable[Response]]


async def page(app: App, request: Request) -> Response:
    """``GET /`` and the page's other files (:mod:`livenotify.web`), served
    with its Content-Security-Policy."""
    item = web.asset(request.target)
    if item is None:  # pragma: no cover - routed by web.PATHS
        return error_response(NOT_FOUND, f"no such endpoint: {request.path[:100]}")
    headers = web.policy_headers(request.header(b"host"))
    return Response(
        200,
        item.body,
        item.content_type.encode(),
        [(k.lower().encode(), v.encode()) for k, v in headers],
    )


async def health(app: App, request: Request) -> Response:
    """``GET /health``: 200 while the process serves."""
    return json_response({"status": "ok"})


async def publish(app: App, request: Request) -> Response:
    """``POST /publish/<event>``: the body (a JSON object's fields, or text
    as ``message``) to every subscriber of the event, as a seed-form message
    from a WebSocket or TCP client would be."""
    hub, config = app.hub, app.config
    event = request.path[len("/publish/") :]
    access = app.access
    if access.jwt or config.publish_token is not None:
        if request_token(request) is None:
            return error_response(protocol.FORBIDDEN, "publishing needs a token", 401)
        # The shared --publish-token, or a JWT whose publish claim grants it.
        grant = access.authorize(request)
        access.check_publish(event, grant, request_token(request) if grant is ANONYMOUS else None)
    if request.bucket is not None and not request.bucket.take():
        return error_response(
            protocol.RATE_LIMITED,
            f"more than {config.limits.rate_per_second:g} requests per second on this connection",
        )
    try:
        protocol.check_event_name(event, config.limits, allow_all=False)
        if not hub.is_known(event):
            raise ProtocolError(
                protocol.UNKNOWN_EVENT,
                f"unknown event {event!r}; available: {', '.join(hub.catalog)}",
            )
        fields = _fields(request, config.limits)
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    # The hub's publish path, as a session's publish takes: a log that
    # cannot take it is busy / backend_unavailable (503), nothing delivered.
    try:
        sent = await recovery.publish(hub, event, fields)
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    reply = protocol.Published(event, sent.id, sent.delivered, sent.offset)
    return Response(200, protocol.encode_server(reply).encode())


async def sse_stream(app: App, request: Request) -> Response:
    """``GET /sse``: the connection becomes a Server-Sent Events stream
    (:mod:`.sse`); a bad request is a plain JSON error before it."""
    events, since = sse.check_request(
        app.hub, app.config.limits, request.query, request.header(b"last-event-id")
    )
    # A token (Bearer or ?token=) may grant private events; without a grant
    # asking for one is forbidden, and ``*`` leaves them out.
    grant = app.access.authorize(request)
    app.access.check_subscribe(events, grant)
    stream = functools.partial(sse.stream_events, app, events, since, grant)
    return Response(200, b"", takeover=stream)


async def readiness(app: App, request: Request) -> Response:
    """``GET /ready``: 200 when every part is ok, else 503; each part as JSON
    (:mod:`livenotify.ready`)."""
    ok, parts = await ready.check(app)
    return json_response({"status": "ok" if ok else "unavailable", **parts}, 200 if ok else 503)


async def metrics_text(app: App, request: Request) -> Response:
    """``GET /metrics``: the Prometheus text format (:mod:`livenotify.metrics`)."""
    return Response(200, app.metrics.render(), metrics.CONTENT_TYPE.encode())


async def confirm(app: App, request: Request) -> Response:
    """``GET /confirm?code=C``: the link of the confirmation mail (double
    opt-in); the JSON ``confirmed`` reply, or ``invalid_code`` (400)."""
    if request.bucket is not None and not request.bucket.take():
        return error_response(protocol.RATE_LIMITED, "too many requests on this connection")
    codes = request.query.get("code") or [""]
    email = await app.optin.confirm(app.storage, codes[0])
    return Response(200, protocol.encode_server(protocol.Confirmed(email)).encode())


def _fields(request: Request, limits: Any) -> dict[str, Any]:
    """The notification's fields from the body (validated as the protocol does)."""
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(protocol.INVALID_UTF8, "the body is not UTF-8") from None
    ctype = (request.header(b"content-type") or "").split(";")[0].strip().lower()
    if ctype == "application/json" or (not ctype and text.lstrip().startswith("{")):
        obj = protocol.load_object(text, limits)
    else:
        # Text (already within the size limit, and valid UTF-8).
        if "\x00" in text:
            raise ProtocolError(protocol.NUL_BYTE, "NUL characters are not allowed")
        obj = {"message": text}
    # As in seed form: the event is the path's, and the token never reaches
    # subscribers.
    obj.pop("type", None)
    obj.pop("token", None)
    return obj


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    #: Match every path under ``path`` (which then ends in ``/``).
    prefix: bool = False

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) if self.prefix else path == self.path


#: Every HTTP endpoint of the front door. Add routes here.
ROUTES: list[Route] = [
    *(Route("GET", path, page) for path in sorted(web.PATHS)),
    Route("GET", "/health", health),
    Route("GET", "/confirm", confirm),
    Route("POST", "/publish/", publish, prefix=True),
    Route("GET", "/sse", sse_stream),
    Route("GET", "/ready", readiness),
    Route("GET", "/metrics", metrics_text),
]


async def route(app: App, request: Request) -> Response:
    """Answer ``request`` from :data:`ROUTES`: 404 for an unknown path, 405
    for a known path with another method."""
    method = request.method
    allowed = [r for r in ROUTES if r.matches(request.path)]
    for r in allowed:
        if r.method == method:
            try:
                response = await r.handler(app, request)
            except ProtocolError as exc:
                response = error_response(exc.code, exc.message)
            return response
    if not allowed:
        return error_response(NOT_FOUND, f"no such endpoint: {request.path[:100]}")
    response = error_response(METHOD_NOT_ALLOWED, f"use {allowed[0].method}")
    response.headers.append((b"allow", ", ".join(sorted({r.method for r in allowed})).encode()))
    return response
