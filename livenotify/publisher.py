"""A small synchronous producer API for other Python applications.

A Django view (or any blocking code) publishes through one long-lived TCP
connection::

    from livenotify import Publisher

    publisher = Publisher("localhost", 8888)
    publisher.publish("furniture_created", furniture={"id": "42", "nombre": "Mesa"})

Over TLS (a server started with ``--tls-cert``): ``Publisher(host, port,
tls=True, cafile="ca.pem")`` (``cafile``: the CA to trust instead of the
system's). ``token`` is the shared ``--publish-token`` or a JWT whose
``publish`` claim grants the event.

Subscribers receive the keyword arguments as the notification's top-level
fields, exactly as a seed-form producer sends them.

Or over HTTP, through one keep-alive connection to the WebSocket port
(``POST /publish/<event>``), where only HTTP gets through::

    publisher = Publisher("http://localhost:8765", token="...")

Each call waits for the server's ``published`` acknowledgement, so a
returned call means the server accepted the notification. A broken
connection is re-opened once per call; thread-safe through one lock.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import protocol
from .protocol import Error, ProtocolError, Published

__all__ = ["PublishError", "Publisher"]

#: Largest server line (or HTTP answer) we accept while waiting for an ack.
MAX_LINE = 1 << 20
#: The port of an ``http://`` URL without one: the server's WebSocket port.
HTTP_PORT = 8765


class PublishError(Exception):
    """The server refused the notification (``code`` says why) or is unreachable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Publisher:
    """Publish notifications to a livenotify server over TCP; over HTTP when
    ``host`` is an ``http://`` or ``https://`` URL, over WebSocket when it is
    a ``ws://`` or ``wss://`` URL (see :mod:`livenotify.publisher_ws`). A
    URL's port (default 8765) is the server's WebSocket port; ``port`` is
    then ignored."""

    def __new__(cls, host: str = "localhost", *args: Any, **kwargs: Any) -> Publisher:
        # A ws:// or wss:// URL: the WebSocket transport, imported only then
        # (wsproto), so this module stays stdlib-only.
        if cls is Publisher and host.startswith(("ws://", "wss://")):
            from .publisher_ws import WsPublisher

            return super().__new__(WsPublisher)
        return super().__new__(cls)

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8888,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        tls: bool = False,
        cafile: str | None = None,
    ) -> None:
        self.token = token
        #: The verifying TLS context (None: plain TCP).
        self._tls = ssl.create_default_context(cafile=cafile) if tls or cafile else None
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._lock = threading.Lock()
        #: HTTP: the keep-alive connection and the URL's path prefix.
        self._http: http.client.HTTPConnection | None = None
        self._base = ""
        if host.startswith(("http://", "https://")):
            url = urllib.parse.urlsplit(host)
            if not url.hostname:
                raise ValueError(f"no host in {host!r}")
            self.host, self.port = url.hostname, url.port or HTTP_PORT
            self._base = url.path.rstrip("/")
            if url.scheme == "https":
                self._http = http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
            else:
                self._http = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        else:
            self.host, self.port = host, port

    def publish(
        self, event: str, data: Any = None, /, *, message: str | None = None, **fields: Any
    ) -> Published:
        """Publish ``event``; return the server's acknowledgement (its
        ``offset`` is the notification's place in the log).

        Subscribers receive ``fields`` at the top level of the notification,
        as a seed-form producer sends them: ``publish("furniture_created",
        furniture={...})`` reaches them as ``msg.furniture``. ``data`` and
        ``message`` are sent as fields of those names, for callers that ask
        for them.

        Raises :class:`PublishError` when the server refuses it (``forbidden``,
        ``unknown_event``...) or cannot be reached.
        """
        if self._http is not None:
            body = dict(fields)
            if data is not None:
                body["data"] = data
            if message is not None:
                body["message"] = message
            return self._post(event, protocol.encode(body).encode())
        obj: dict[str, Any] = {"type": "publish", "event": event}
        if fields:
            obj["fields"] = fields
        if data is not None:
            obj["data"] = data
        if message is not None:
            obj["message"] = message
        if self.token is not None:
            obj["token"] = self.token
        line = (protocol.encode(obj) + "\n").encode()
        return self._retrying(lambda: self._exchange(line))

    def _retrying(self, call: Callable[[], Published]) -> Published:
        """``call`` under the lock, once more on a fresh connection if the
        first attempt found it broken."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return call()
                except (OSError, EOFError, http.client.HTTPException) as exc:
                    self._close()
                    if attempt == 2:
                        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                        where = f"[{self.host}]" if ":" in self.host else self.host
                        raise PublishError(
                            "unreachable", f"cannot reach {where}:{self.port}: {why}"
                        ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_socket(self) -> socket.socket:
        """A connected socket, under TLS when configured (closed on failure)."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def _connect(self) -> None:
        sock = self._sock = self._open_socket()
        self._file = sock.makefile("rb")
        self._read()  # the welcome

    def _read(self) -> protocol.ServerMessage:
        raw = self._file.readline(MAX_LINE)
        if not raw:
            raise EOFError("server closed the connection")
        try:
            return protocol.decode_server(raw.decode())
        except (ProtocolError, UnicodeDecodeError) as exc:
            raise PublishError("invalid_reply", str(exc)) from None

    def _exchange(self, line: bytes) -> Published:
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        self._sock.sendall(line)
        return self._reply()

    def _reply(self) -> Published:
        """Read up to the answer to a publish: Published, or PublishError."""
        while True:
            reply = self._read()
            if isinstance(reply, Published):
                return reply
            if isinstance(reply, Error):
                raise PublishError(reply.code, reply.message)
            # Anything else (a goodbye, a notification) is not our answer.
            if isinstance(reply, protocol.Goodbye):
                raise EOFError("server is shutting down")

    def _post(self, event: str, body: bytes) -> Published:
        """``POST /publish/<event>`` on the keep-alive connection."""
        path = f"{self._base}/publish/{urllib.parse.quote(event, safe='')}"
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"

        def exchange() -> Published:
            assert self._http is not None
            self._http.request("POST", path, body=body, headers=headers)
            response = self._http.getresponse()
            raw = response.read(MAX_LINE)
            if response.will_close:
                self._http.close()  # the next call opens a new one
            try:
                reply = protocol.decode_server(raw.decode())
            except (ProtocolError, UnicodeDecodeError) as exc:
                raise PublishError(
                    "invalid_reply", f"HTTP {response.status}: {str(exc)[:200]}"
                ) from None
            if isinstance(reply, Published):
                return reply
            if isinstance(reply, Error):
                raise PublishError(reply.code, reply.message)
            raise PublishError("invalid_reply", f"HTTP {response.status}: unexpected {reply!r}")

        return self._retrying(exchange)

    def _close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._sock is not None:
            try:
                self._file.close()
                self._sock.close()
            finally:
                self._sock = None
                self._file = None

    def close(self) -> None:
        """Close the connection (a later publish re-opens it)."""
        with self._lock:
            self._close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def parse_message(text: str) -> tuple[dict[str, Any], str | None]:
    """CLI helper: a JSON object's keys become fields; other text is ``message``."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}, text
    if isinstance(value, dict):
        return value, None
    return {}, text
