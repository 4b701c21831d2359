"""Blocking TCP and WebSocket clients with full control over the wire.

The stateful machine needs what friendly clients hide: raw bytes (invalid
UTF-8, NUL), binary frames, frames over the server's size limit, and abrupt
disconnects (RST, no close frame). The WebSocket side is wsproto (already a
dependency of trio-websocket) over a plain socket, so there is no background
thread to leak when a connection is torn down. Every read has a timeout.
"""

from __future__ import annotations

import json
import socket
import struct
from collections import deque
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

#: Seconds any single read may take: generous for a loaded 2-core machine,
#: short enough that a lost message fails the test quickly.
READ_TIMEOUT = 10.0
RECV_CHUNK = 65536


class Closed(Exception):
    """The server ended the connection (``code`` is the WebSocket close code)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


def _reset_on_close(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST, the rudest goodbye.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class TcpConn:
    """An NDJSON/command-line TCP client."""

    kind = "tcp"

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = READ_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = bytearray()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def send(self, obj: dict[str, Any]) -> None:
        self.send_text(json.dumps(obj))

    def recv_line(self) -> str:
        """The next line as sent; :class:`Closed` at end of stream."""
        while (nl := self._buf.find(b"\n")) < 0:
            data = self.sock.recv(RECV_CHUNK)
            if not data:
                raise Closed(None, "eof")
            self._buf += data
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        return line.decode()

    def recv(self) -> dict[str, Any]:
        """The next JSON line; :class:`Closed` at end of stream."""
        obj: dict[str, Any] = json.loads(self.recv_line())
        return obj

    def close_abruptly(self) -> None:
        _reset_on_close(self.sock)
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


class WsConn:
    """A WebSocket client (wsproto over a blocking socket)."""

    kind = "ws"

    def __init__(
        self, port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = READ_TIMEOUT
    ):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.closed: Closed | None = None
        self._messages: deque[str | bytes] = deque()
        # Fragments of the message being received (text or binary).
        self._text: list[str] = []
        self._bytes = bytearray()
        self._accepted = False
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=path)))
        while not self._accepted:
            if self.closed is not None:
                raise self.closed
            self._pump()

    def _pump(self) -> None:
        """Read once from the socket and act on every event it completes."""
        data = self.sock.recv(RECV_CHUNK)
        self.ws.receive_data(data or None)
        out = bytearray()
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self._accepted = True
            elif isinstance(event, RejectConnection):
                self.closed = Closed(event.status_code, "handshake rejected")
            elif isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    self._messages.append("".join(self._text))
                    self._text = []
            elif isinstance(event, BytesMessage):
                self._bytes += event.data
                if event.message_finished:
                    self._messages.append(bytes(self._bytes))
                    self._bytes = bytearray()
            elif isinstance(event, Ping):
                out += self.ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self.closed = Closed(event.code, event.reason or "")
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    out += self.ws.send(event.response())
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                pass
        if not data and self.closed is None:
            self.closed = Closed(None, "eof")

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send(self, obj: dict[str, Any]) -> None:
        self.send_text(json.dumps(obj))

    def send_binary(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def recv_message(self) -> str | bytes:
        """The next whole message; :class:`Closed` once the server has closed."""
        while not self._messages:
            if self.closed is not None:
                raise self.closed
            self._pump()
        return self._messages.popleft()

    def recv(self) -> dict[str, Any]:
        """The next message, parsed as JSON."""
        message = self.recv_message()
        assert isinstance(message, str), f"binary frame from server: {message!r}"
        obj: dict[str, Any] = json.loads(message)
        return obj

    def close_abruptly(self) -> None:
        _reset_on_close(self.sock)
        self.sock.close()

    def close(self) -> None:
        """A clean close handshake (bounded), then the socket."""
        try:
            if self.ws.state is ConnectionState.OPEN:
                self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
            while self.closed is None:
                self._pump()
        except OSError:
            pass
        finally:
            self.sock.close()


Conn = TcpConn | WsConn
