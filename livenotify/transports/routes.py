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

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import h11

from .. import protocol, web
from ..backplane import BackendUnavailable
from ..history import HistoryBusy
from ..protocol import ProtocolError
from ..ratelimit import TokenBucket

if TYPE_CHECKING:
    from ..config import Config
    from ..hub import Hub


class App(Protocol):
    """What handlers may use of the running server (:class:`~livenotify.server.Server`)."""

    config: Config
    hub: Hub


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


async def ready(app: App, request: Request) -> Response:
    """``GET /ready``: 200 while this process can publish (its backplane
    reaches the shared log), else 503 with the same JSON."""
    state = app.hub.backplane.ready()
    body = {"status": "ok" if state.get("ok") else "unavailable", "backplane": state}
    return json_response(body, 200 if state.get("ok") else 503)


async def publish(app: App, request: Request) -> Response:
    """``POST /publish/<event>``: the body (a JSON object's fields, or text
    as ``message``) to every subscriber of the event, as a seed-form message
    from a WebSocket or TCP client would be."""
    hub, config = app.hub, app.config
    event = request.path[len("/publish/") :]
    expected = config.publish_token
    if expected is not None:
        auth = request.header(b"authorization")
        if auth is None:
            return error_response(protocol.FORBIDDEN, "publishing needs a token", 401)
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != expected:
            return error_response(protocol.FORBIDDEN, "publishing needs a valid token")
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
    # The hub's publish path, as a session's publish takes; a log that
    # cannot take it refuses it (nothing was delivered): 503.
    try:
        sent = await hub.publish(event, fields)
    except HistoryBusy:
        return error_response(BUSY, "the notification log is busy; try again")
    except BackendUnavailable:
        return error_response(BACKEND_UNAVAILABLE, "the backend is unavailable; try again")
    reply = protocol.Published(event, sent.id, sent.delivered, sent.offset)
    return Response(200, protocol.encode_server(reply).encode())


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
    Route("GET", "/ready", ready),
    Route("POST", "/publish/", publish, prefix=True),
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
