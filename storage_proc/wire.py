"""Messages between the server (bridge) and the writer process, and their framing.

The two ends share one ``AF_UNIX`` socket pair. A frame is a 4-byte
big-endian length and a pickle of one message. Pickle is safe here: both
ends are this code, and the socket is a private pair, never a listener.

Server -> writer: :class:`Writes` (a run of writes with consecutive sequence
numbers), :class:`Query` (a read: the server process opens no SQLite
connection of its own, so a broken or vanished database file can cost a
read, never the server), :class:`Close`.
Writer -> server: :class:`Ready` (once, after opening and migrating),
:class:`Fatal` (instead of Ready: the database cannot be used), :class:`Ack`
(after every commit), :class:`Answer` (to a Query), :class:`Failed` (a write
failed; the writer exits and is restarted), :class:`Closed`.
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import time
from typing import Final, NamedTuple

_HEADER: Final = struct.Struct(">I")
#: A frame above this is a bug, not data: a chunk of writes is bounded by
#: the bridge (see ``CHUNK_BYTES``) far below it.
MAX_FRAME: Final = 64 * 1024 * 1024


class Writes(NamedTuple):
    first_seq: int
    #: :func:`storage_proc.ops.pack` of each write, consecutive sequence numbers.
    rows: list[tuple[object, ...]]


class Query(NamedTuple):
    #: Chosen by the bridge; the Answer carries it back.
    qid: int
    #: A name in :data:`storage_proc.queries.QUERIES`.
    name: str
    args: tuple[object, ...]


class Close(NamedTuple):
    pass


class Ready(NamedTuple):
    #: Highest sequence number of this bridge's epoch already committed.
    committed_seq: int
    schema_before: int
    schema_after: int
    #: The notification log's state after start-up (see storage_proc.history).
    log: dict[str, object]


class Answer(NamedTuple):
    qid: int
    #: False: ``value`` is the error text.
    ok: bool
    value: object


class Fatal(NamedTuple):
    message: str


class Ack(NamedTuple):
    #: Every write up to and including this one is committed.
    seq: int
    #: Outbox rows the commit added.
    outbox_rows: int


class Failed(NamedTuple):
    message: str


class Closed(NamedTuple):
    pass


ToWriter = Writes | Query | Close
FromWriter = Ready | Fatal | Ack | Answer | Failed | Closed


def encode(message: ToWriter | FromWriter) -> bytes:
    """One frame holding ``message``."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class FrameBuffer:
    """Reassembles frames from received bytes (both ends use it)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next(self) -> object | None:
        """The next complete message, or None if more bytes are needed."""
        avail = len(self._buf) - self._pos
        if avail < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buf, self._pos)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
        end = self._pos + _HEADER.size + size
        if len(self._buf) < end:
            return None
        message: object = pickle.loads(self._buf[self._pos + _HEADER.size : end])
        self._pos = end
        if self._pos > (1 << 20) and self._pos * 2 > len(self._buf):
            # Compact now and then, not on every frame: deleting the head of
            # a bytearray moves the rest.
            del self._buf[: self._pos]
            self._pos = 0
        return message


class TimedOut:
    """:meth:`BlockingReader.read` found no frame before the deadline."""


class EndOfStream:
    """The other end closed the socket."""


TIMED_OUT: Final = TimedOut()
END_OF_STREAM: Final = EndOfStream()

#: Bytes per recv(): large enough that a burst arrives in few calls.
_RECV_SIZE: Final = 1 << 20


class BlockingReader:
    """The writer's side: read frames from a blocking socket, with a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._frames = FrameBuffer()

    def read(self, deadline: float | None) -> object:
        """The next message, :data:`TIMED_OUT` at ``deadline`` (monotonic), or
        :data:`END_OF_STREAM`."""
        while True:
            message = self._frames.next()
            if message is not None:
                return message
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return TIMED_OUT
                readable, _, _ = select.select([self._sock], [], [], remaining)
                if not readable:
                    return TIMED_OUT
            try:
                data = self._sock.recv(_RECV_SIZE)
            except ConnectionError:
                return END_OF_STREAM
            if not data:
                return END_OF_STREAM
            self._frames.feed(data)
