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

Each call waits for the server's ``published`` acknowledgement, so a
returned call means the server accepted the notification. A broken
connection is re-opened once per call; thread-safe through one lock.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from types import TracebackType
from typing import Any

from . import protocol
from .protocol import Error, ProtocolError, Published

__all__ = ["PublishError", "Publisher"]

#: Largest server line we accept while waiting for an ack.
MAX_LINE = 1 << 20


class PublishError(Exception):
    """The server refused the notification (``code`` says why) or is unreachable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Publisher:
    """Publish notifications to a livenotify server over TCP (or WebSocket:
    ``Publisher("ws://host:8765")``, see :mod:`livenotify.publisher_ws`)."""

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
        self.host = host
        self.port = port
        self.token = token
        #: The verifying TLS context (None: plain TCP).
        self._tls = ssl.create_default_context(cafile=cafile) if tls or cafile else None
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._lock = threading.Lock()

    def publish(
        self, event: str, data: Any = None, /, *, message: str | None = None, **fields: Any
    ) -> Published:
        """Publish ``event``; return the server's acknowledgement.

        Subscribers receive ``fields`` at the top level of the notification,
        as a seed-form producer sends them: ``publish("furniture_created",
        furniture={...})`` reaches them as ``msg.furniture``. ``data`` and
        ``message`` are sent as fields of those names, for callers that ask
        for them.

        Raises :class:`PublishError` when the server refuses it (``forbidden``,
        ``unknown_event``...) or cannot be reached.
        """
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
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._exchange(line)
                except (OSError, EOFError) as exc:
                    self._close()
                    if attempt == 2:
                        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                        where = f"[{self.host}]" if ":" in self.host else self.host
                        raise PublishError(
                            "unreachable", f"cannot reach {where}:{self.port}: {why}"
                        ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
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
        while True:
            reply = self._read()
            if isinstance(reply, Published):
                return reply
            if isinstance(reply, Error):
                raise PublishError(reply.code, reply.message)
            # Anything else (a goodbye, a notification) is not our answer.
            if isinstance(reply, protocol.Goodbye):
                raise EOFError("server is shutting down")

    def _close(self) -> None:
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
