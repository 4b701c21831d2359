"""One WebSocket connection to the server (``ws://`` / ``wss://``), through trio-websocket.

For a terminal behind a proxy that only passes HTTP: the same interface as
:class:`.connection.Connection` (``send``, ``receive``, ``aclose``,
``where``, ``goodbye``), one JSON object per WebSocket message instead of
one per line.

trio-websocket runs a reader task per connection in a nursery the caller
provides. Each connection gets a small nursery of its own, hosted in the
caller's (long-lived) nursery and cancelled by :meth:`WsConnection.aclose`,
so a connect that times out or a connection dropped during a reconnection
never leaves a reader task behind.

The server's goodbye is a close frame on WebSocket (1000 ``exit``, 1001
``shutting_down``); :meth:`WsConnection.receive` hands it on as the
``goodbye`` message TCP sends.

The URL's ``events`` query parameter is set to empty: the server subscribes
a WebSocket to nothing then, and the client subscribes explicitly, as on
TCP.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from .. import protocol
from ..protocol import ProtocolError, ServerMessage
from ..wsurl import check_url, host_header, unsubscribed_url
from .connection import (
    _SERVER_LIMITS,
    CONNECT_TIMEOUT,
    MAX_LINE_BYTES,
    ConnectError,
    ConnectionLost,
    Received,
    _reason,
    open_stream,
)

__all__ = ["WsConnection", "open_ws_connection"]

#: Seconds the close handshake may take before the socket is just closed.
CLOSE_TIMEOUT = 2.0
#: Close codes that are an orderly end (normal, going away), not a loss.
_ORDERLY = (1000, 1001)


async def open_ws_connection(
    nursery: trio.Nursery, url: str, tls: ssl.SSLContext | None = None
) -> WsConnection:
    """Connect to ``url`` (``wss://``: verified with ``tls``, or the system's
    CAs); raise :class:`.ConnectError` with a one-line reason.

    ``nursery`` must outlive the connection: it hosts the connection's own
    nursery (trio-websocket's reader task).
    """
    host_name, port, secure = check_url(url)
    where = url.split("?", 1)[0]
    # Our own TCP (keepalive) and TLS (a clear verification error), as on
    # TCP; trio-websocket takes over the connected stream.
    stream = await open_stream(
        host_name, port, (tls or ssl.create_default_context()) if secure else None, where
    )
    target = urlsplit(unsubscribed_url(url))
    scope = trio.CancelScope()

    async def host(
        *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                task_status.started(inner)
                await trio.sleep_forever()  # until aclose() cancels the scope

    try:
        inner = await nursery.start(host)
        with trio.fail_after(CONNECT_TIMEOUT):
            ws = await trio_websocket.wrap_client_stream(
                inner,
                stream,
                host_header(host_name, port, secure),
                f"{target.path}?{target.query}",
                max_message_size=MAX_LINE_BYTES,
            )
    except BaseException as exc:
        scope.cancel()
        with trio.CancelScope(shield=True):
            await stream.aclose()
        if isinstance(exc, trio.TooSlowError):
            raise ConnectError(f"cannot connect to {where}: no WebSocket handshake") from None
        if isinstance(exc, trio_websocket.ConnectionRejected):
            raise ConnectError(f"cannot connect to {where}: HTTP {exc.status_code}") from None
        if isinstance(exc, (OSError, trio.BrokenResourceError, trio_websocket.HandshakeError)):
            raise ConnectError(f"cannot connect to {where}: {_reason(exc)}") from None
        raise
    return WsConnection(ws, where, scope)


class WsConnection:
    """A connected server over WebSocket: send objects, receive decoded messages."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, where: str, scope: trio.CancelScope
    ) -> None:
        self.where = where
        self._ws = ws
        self._scope = scope
        #: The goodbye the server sent, if any (it closes right after).
        self.goodbye: protocol.Goodbye | None = None

    async def send(self, obj: Mapping[str, Any]) -> None:
        """Send one object as a text message; raise :class:`.ConnectionLost` if gone."""
        try:
            # trio-websocket serialises concurrent sends itself.
            await self._ws.send_message(protocol.encode(obj))
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError) as exc:
            raise ConnectionLost(_closed_reason(exc)) from None

    async def receive(self) -> Received | None:
        """The next message, decoded; None once the server closed the connection."""
        try:
            data = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            if reason is None or reason.code not in _ORDERLY:
                raise ConnectionLost(_closed_reason(exc)) from None
            if self.goodbye is None and reason.reason:
                # The WebSocket form of TCP's goodbye line is the close frame
                # (1000 "exit", 1001 "shutting_down"): told as that message,
                # so the client ends (and prints in --json) as on TCP.
                self.goodbye = protocol.Goodbye(reason.reason)
                text = protocol.encode({"type": "goodbye", "reason": reason.reason})
                return Received(text, self.goodbye)
            return None
        if isinstance(data, bytes):
            try:
                data = data.decode()
            except UnicodeDecodeError:
                return Received("", ProtocolError("invalid_message", "a message is not UTF-8"))
        text = data.strip()
        try:
            message: ServerMessage | ProtocolError = protocol.decode_server(text, _SERVER_LIMITS)
        except ProtocolError as exc:
            message = exc
        if isinstance(message, protocol.Goodbye):
            self.goodbye = message
        return Received(text, message)

    async def aclose(self) -> None:
        """Close (handshake bounded by CLOSE_TIMEOUT), end the reader task; idempotent."""
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._ws.aclose()
        finally:
            self._scope.cancel()


def _closed_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, trio_websocket.CloseReason):
        if reason.code == 1006:
            return "the connection was lost"
        text = f": {reason.reason}" if reason.reason else ""
        return f"the connection closed ({reason.code} {reason.name}{text})"
    return _reason(exc)
