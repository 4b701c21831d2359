"""The :class:`~livenotify.publisher.Publisher` over WebSocket: ``Publisher("ws://host:8765")``.

For a producer that can only reach the server through a proxy passing HTTP::

    publisher = Publisher("wss://notify.example.com:8765", token=TOKEN)
    publisher.publish("furniture_created", furniture={"id": "42"})

Departure from the issue's "through trio-websocket": :class:`Publisher` is
synchronous (a Django view calls it), and trio-websocket needs a running
Trio loop. This transport speaks the protocol with wsproto (sans-IO, the
library under trio-websocket) over a blocking socket, wrapped by :mod:`ssl`
for ``wss://``. It is imported only when a ``ws://``/``wss://`` URL is used,
so ``livenotify.publisher`` stays stdlib-only.

It connects to the URL with ``events=`` (subscribed to nothing): a producer
subscribed to ``*`` would have notifications unread when it closes, and the
close would become a reset that loses the end of a burst. Everything else is
the TCP form's: the same ``publish`` message and ``published`` ack, the same
:class:`~livenotify.publisher.PublishError` codes, one connection reused
across calls and reopened once per call if broken, a clean close (a close
frame, the server's answer awaited) on :meth:`close`.
"""

from __future__ import annotations

from collections import deque
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from . import protocol
from .protocol import ProtocolError, Published
from .publisher import MAX_LINE, Publisher, PublishError
from .wsurl import check_url, host_header, unsubscribed_url

__all__ = ["WsPublisher"]

#: Bytes asked of the socket per read.
RECEIVE_CHUNK = 16 * 1024
#: Seconds the close handshake may take before the socket is just closed.
CLOSE_TIMEOUT = 2.0


class WsPublisher(Publisher):
    """A :class:`Publisher` over ``ws://`` / ``wss://`` (made by ``Publisher(url)``)."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        tls: bool = False,
        cafile: str | None = None,
    ) -> None:
        # ``host`` is the URL (the name Publisher's first parameter has).
        url = host
        try:
            host, url_port, secure = check_url(url)
        except ValueError as exc:
            raise ValueError(f"{url}: {exc}") from None
        # The URL names the port; ``port`` is accepted for the TCP signature's sake.
        super().__init__(
            host, url_port, token=token, timeout=timeout, tls=tls or secure, cafile=cafile
        )
        self.url = url
        parts = urlsplit(unsubscribed_url(url))
        self._target = f"{parts.path}?{parts.query}"
        self._host_header = host_header(host, url_port, secure)
        self._ws: WSConnection | None = None
        self._events: deque[Event] = deque()

    def _connect(self) -> None:
        sock = self._sock = self._open_socket()
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._events.clear()
        sock.sendall(self._ws.send(Request(host=self._host_header, target=self._target)))
        event = self._next_event()
        if isinstance(event, RejectConnection):
            self._close()
            raise PublishError(
                "rejected", f"the server refused the WebSocket: HTTP {event.status_code}"
            )
        if not isinstance(event, AcceptConnection):
            raise EOFError("no WebSocket handshake answer")
        self._read()  # the welcome

    def _next_event(self) -> Event:
        """The next wsproto event, reading the socket as needed; EOFError at its end."""
        assert self._sock is not None and self._ws is not None
        while not self._events:
            data = self._sock.recv(RECEIVE_CHUNK)
            self._ws.receive_data(data or None)
            try:
                self._events.extend(self._ws.events())
            except RemoteProtocolError as exc:  # not a WebSocket server, or a broken one
                raise EOFError(f"WebSocket protocol error: {exc}") from None
            if not data and not self._events:
                raise EOFError("server closed the connection")
        return self._events.popleft()

    def _read(self) -> protocol.ServerMessage:
        """The next whole text message, decoded (answering pings and the server's close)."""
        assert self._sock is not None and self._ws is not None
        parts: list[str] = []
        size = 0
        while True:
            event = self._next_event()
            if isinstance(event, Ping):
                self._sock.sendall(self._ws.send(event.response()))
                continue
            if isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._sock.sendall(self._ws.send(event.response()))
                raise EOFError(f"server closed the connection ({event.code})")
            if isinstance(event, (TextMessage, BytesMessage)):
                chunk = (
                    event.data
                    if isinstance(event.data, str)
                    else event.data.decode("utf-8", "replace")
                )
                size += len(chunk)
                if size > MAX_LINE:
                    raise PublishError("invalid_reply", "a server message is too long")
                parts.append(chunk)
                if event.message_finished:
                    try:
                        return protocol.decode_server("".join(parts))
                    except ProtocolError as exc:
                        raise PublishError("invalid_reply", str(exc)) from None

    def _exchange(self, line: bytes) -> Published:
        if self._sock is None:
            self._connect()
        assert self._sock is not None and self._ws is not None
        self._sock.sendall(self._ws.send(TextMessage(data=line.decode().rstrip("\n"))))
        return self._reply()

    def _close(self) -> None:
        sock, ws = self._sock, self._ws
        self._sock, self._ws, self._file = None, None, None
        if sock is None:
            return
        try:
            if ws is not None and ws.state is ConnectionState.OPEN:
                # A clean close: our close frame, then the server's answer
                # (its remaining messages read and dropped), then the socket.
                sock.settimeout(min(self.timeout, CLOSE_TIMEOUT))
                sock.sendall(ws.send(CloseConnection(code=1000)))
                self._sock, self._ws = sock, ws
                while not isinstance(self._next_event(), CloseConnection):
                    pass
        except (OSError, EOFError):
            pass  # closing anyway
        finally:
            self._sock, self._ws = None, None
            self._events.clear()
            sock.close()
