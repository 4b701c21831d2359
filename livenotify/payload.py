"""Encode once, frame once: the bytes a message takes on each transport.

A broadcast is encoded to JSON text once; each transport kind then frames it
at most once (a TCP line, or a server-to-client WebSocket text frame, which is
unmasked and therefore the same bytes for every subscriber). Subscribers'
queues hold the shared :class:`Payload`, never a per-subscriber copy.
"""

from __future__ import annotations

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


class Payload:
    """JSON text plus its lazily built, cached wire forms."""

    __slots__ = ("_frame", "_line", "offset", "text")

    def __init__(self, text: str, offset: int = 0) -> None:
        self.text = text
        #: The notification's offset in the log (0: not a notification).
        self.offset = offset
        self._line: bytes | None = None
        self._frame: bytes | None = None

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

    def __repr__(self) -> str:
        return f"Payload({self.text[:60]!r})"
