"""One TCP connection to the server: NDJSON lines out, typed messages in.

Also the two small policies around it: how a failed connect is told in one
line (:class:`ConnectError`), and how long to wait between reconnection
attempts (:class:`Backoff`).
"""

from __future__ import annotations

import errno
import os
import random
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from .. import protocol
from ..config import Limits
from ..protocol import LineDecoder, ProtocolError, ServerMessage

__all__ = ["Backoff", "ConnectError", "Connection", "ConnectionLost", "Received", "open_connection"]

#: Bytes asked of the socket per read.
RECEIVE_CHUNK = 16 * 1024
#: Longest server line we accept. The server bounds what a publisher may send
#: (64 KiB by default) and adds a few fields; 1 MiB leaves ample room while a
#: broken server still cannot make us buffer without bound.
MAX_LINE_BYTES = 1 << 20
#: Seconds one connection attempt may take (DNS, every address tried).
CONNECT_TIMEOUT = 10.0
#: TCP keepalive: after this many idle seconds the kernel probes the server,
#: so a server that vanished without a FIN (power loss, cable) is noticed in
#: about a minute rather than the kernel's default two hours.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 3

# Server messages are decoded with generous limits: the server is trusted to
# be sane, but a huge line is already bounded by MAX_LINE_BYTES.
_SERVER_LIMITS = Limits(max_message_bytes=MAX_LINE_BYTES, max_json_depth=256)


class ConnectError(Exception):
    """The server could not be reached; ``str()`` is one line for the user."""


class ConnectionLost(Exception):
    """The connection broke (reset, closed under us) while in use."""


@dataclass(frozen=True, slots=True)
class Received:
    """One line from the server: its text and what it decoded to."""

    text: str
    message: ServerMessage | ProtocolError


def address(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: BaseException) -> str:
    """The most specific human reason inside an ``OSError`` from trio."""
    stack: list[BaseException] = [exc]
    while stack:
        err = stack.pop(0)
        if isinstance(err, OSError) and err.errno:
            if isinstance(err, socket.gaierror):
                text = err.strerror or "name lookup failed"
                return text[:1].lower() + text[1:]
            try:
                return os.strerror(err.errno).lower()
            except ValueError:
                return f"error {err.errno}"
        if isinstance(err, BaseExceptionGroup):
            stack.extend(err.exceptions)
        if err.__cause__ is not None:
            stack.append(err.__cause__)
    return str(exc) or type(exc).__name__


async def open_connection(host: str, port: int, tls: ssl.SSLContext | None = None) -> Connection:
    """Connect (IPv4 or IPv6, every address of ``host`` tried), with TLS when
    given a context (the server's certificate verified for ``host``); raise
    :class:`ConnectError`."""
    where = address(host, port)
    return Connection(await open_stream(host, port, tls, where), where)


async def open_stream(
    host: str, port: int, tls: ssl.SSLContext | None, where: str
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """The connected (and TLS-handshaken) stream under a connection; raise
    :class:`ConnectError` naming ``where``."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise ConnectError(f"cannot connect to {where}: timed out") from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {where}: {_reason(exc)}") from None
    _keepalive(stream.socket)
    if tls is None:
        return stream
    secure = trio.SSLStream(stream, tls, server_hostname=host, https_compatible=True)
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await secure.do_handshake()
    except trio.TooSlowError:
        await stream.aclose()
        raise ConnectError(f"cannot connect to {where}: TLS handshake timed out") from None
    except trio.BrokenResourceError as exc:
        await stream.aclose()
        why = exc.__cause__ or exc
        raise ConnectError(f"cannot connect to {where}: TLS: {why}") from None
    return secure


def _keepalive(sock: trio.socket.SocketType) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system default stays
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    except OSError:  # keepalive is an optimisation, never a reason to fail
        pass


class Connection:
    """A connected server: send objects, receive decoded messages.

    ``send`` may be called from several tasks (the pong answer and a user
    command can race); a lock keeps their lines whole.
    """

    def __init__(self, stream: trio.abc.Stream, where: str) -> None:
        self.where = where
        self._stream = stream
        self._decoder = LineDecoder(MAX_LINE_BYTES)
        self._send_lock = trio.Lock()
        #: The goodbye the server sent, if any (it closes right after).
        self.goodbye: protocol.Goodbye | None = None

    async def send(self, obj: Mapping[str, Any]) -> None:
        """Write one object as a line; raise :class:`ConnectionLost` if the server is gone."""
        data = (protocol.encode(obj) + "\n").encode()
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionLost(_reason(exc)) from None

    async def receive(self) -> Received | None:
        """The next line, decoded; None once the server closed the connection."""
        while True:
            item = self._decoder.next_line()
            if isinstance(item, protocol.Line):
                text = item.text.strip()
                if not text:
                    continue
                try:
                    message: ServerMessage | ProtocolError = protocol.decode_server(
                        text, _SERVER_LIMITS
                    )
                except ProtocolError as exc:
                    message = exc
                if isinstance(message, protocol.Goodbye):
                    self.goodbye = message
                return Received(text, message)
            if item is not None:  # a line too long or not UTF-8: say so, read on
                return Received("", item)
            try:
                data = await self._stream.receive_some(RECEIVE_CHUNK)
            except trio.ClosedResourceError:
                return None
            except trio.BrokenResourceError as exc:
                if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ECONNRESET:
                    raise ConnectionLost("connection reset by the server") from None
                raise ConnectionLost(_reason(exc)) from None
            if not data:
                return None
            self._decoder.receive_data(bytes(data))

    async def aclose(self) -> None:
        """Close the socket (idempotent)."""
        await self._stream.aclose()


class Backoff:
    """Exponential delays with jitter between reconnection attempts.

    "Equal jitter": each delay is drawn between half and all of the current
    step, so a crowd of clients cut off by one restart does not come back in
    lockstep, yet none retries sooner than half a step.
    """

    #: First step in seconds: a server restart takes about a second, so the
    #: first retries are quick.
    INITIAL = 0.25
    FACTOR = 2.0
    #: Longest step: a person waiting at the prompt should not wait more than
    #: this after the server is back.
    CAP = 8.0

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._step = self.INITIAL
        self.attempts = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        self.attempts += 1
        step = self._step
        self._step = min(self._step * self.FACTOR, self.CAP)
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        """Start over (after a successful connection)."""
        self._step = self.INITIAL
        self.attempts = 0
