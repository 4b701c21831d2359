"""Writing to a Trio socket stream without a task switch.

The broadcast fast path (:meth:`Subscriber.push`) writes a pre-framed
message with one non-blocking ``send()`` on the Trio thread, as asyncio's
``transport.write`` does, and only queues what the kernel did not take.
Trio's ``send_all`` is async, so the write goes to the file descriptor,
found through the public ``fileno()`` of the Trio socket (-1 once closed,
so a descriptor number reused by another connection is never written to).
"""

from __future__ import annotations

import os

import trio

from .base import TransportClosed


def raw_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The Trio socket under a socket stream (None for TLS and others)."""
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return None


def raw_send(sock: trio.socket.SocketType | None, data: bytes) -> int | None:
    """One non-blocking ``send()``, outside Trio's ``send_all``.

    Callers ensure no ``send_all`` is running on this stream. Errors return
    None: the writer's next ``send_all`` meets the same error and ends the
    connection properly. (Python ignores SIGPIPE, so a peer that is gone is
    ``BrokenPipeError`` here, not a signal.)
    """
    if sock is None:
        return None
    fd = sock.fileno()
    if fd < 0:
        return None
    try:
        # Trio sockets are non-blocking: write(2) on a socket is send(2).
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:
        return None


class ByteStreamWrites:
    """``send_nowait`` and ``send_all`` of a transport whose frames are plain
    bytes on the stream (TCP lines, SSE events); the class sets ``_stream``,
    ``_raw`` (:func:`raw_socket`) and ``dirty``."""

    __slots__ = ("_raw", "_stream", "dirty")
    _stream: trio.abc.Stream
    _raw: trio.socket.SocketType | None
    dirty: bool

    def send_nowait(self, data: bytes) -> int | None:
        if self.dirty:
            return None
        sent = raw_send(self._raw, data)
        if sent and sent < len(data):
            self.dirty = True  # a frame's tail is left for the writer
        return sent

    async def send_all(self, data: bytes) -> None:
        self.dirty = True
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed(str(exc)) from None
        self.dirty = False
