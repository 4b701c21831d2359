"""Encode once, frame once: the bytes a message takes on each transport.

A broadcast is encoded to JSON text once; each transport kind then frames it
at most once (a TCP line, or a server-to-client WebSocket text frame, which is
unmasked and therefore the same bytes for every subscriber). Subscribers'
queues hold the shared :class:`Payload`, never a per-subscriber copy.
"""

from __future__ import annotations

import json
import struct


def websocket_text_frame(data: bytes) -> bytes:
    """One final, unmasked RFC 6455 text frame (what a server sends)."""
    n = len(data)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + data


def sse_event(text: str) -> bytes:
    """One Server-Sent Events message for the JSON object ``text``:
    ``id: E:N`` (when it carries ``epoch`` and ``offset``), ``event: <type>``,
    ``data: <json>``, and the blank line that ends it. JSON text holds no
    raw newline, so one ``data:`` line carries it all."""
    event, position = "message", None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        kind = obj.get("type")
        if isinstance(kind, str) and kind.isprintable():
            event = kind
        epoch, offset = obj.get("epoch"), obj.get("offset")
        if isinstance(epoch, str) and epoch.isprintable() and type(offset) is int:
            position = f"{epoch}:{offset}"
    head = f"id: {position}\n" if position is not None else ""
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


class Payload:
    """JSON text plus its lazily built, cached wire forms."""

    __slots__ = ("_frame", "_line", "_sse", "offset", "text")

    def __init__(self, text: str, offset: int = 0) -> None:
        self.text = text
        #: The notification's offset in the log (0: not a notification).
        self.offset = offset
        self._line: bytes | None = None
        self._frame: bytes | None = None
        self._sse: bytes | None = None

    def line(self) -> bytes:
        """The NDJSON line for TCP."""
        if self._line is None:
            self._line = (self.text + "\n").encode()
        return self._line

    def ws_frame(self) -> bytes:
        """The WebSocket text frame."""
        if self._frame is None:
            self._frame = websocket_text_frame(self.text.encode())
        return self._frame

    def sse_frame(self) -> bytes:
        """The Server-Sent Events message (see :func:`sse_event`): parsed once
        per notification, whatever the number of SSE subscribers."""
        if self._sse is None:
            self._sse = sse_event(self.text)
        return self._sse

    def __repr__(self) -> str:
        return f"Payload({self.text[:60]!r})"
