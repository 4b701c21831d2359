"""TCP framing: a byte stream split into bounded UTF-8 lines."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import INVALID_UTF8, MESSAGE_TOO_LARGE, NUL_BYTE, ProtocolError


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line, decoded, without its line ending."""

    text: str


class LineDecoder:
    """Split a byte stream into UTF-8 lines of bounded length.

    Feed bytes with :meth:`receive_data`; take results with :meth:`next_line`,
    which returns a :class:`Line`, a :class:`ProtocolError` (the line was too
    long, not UTF-8 or held a NUL; the stream goes on after it), or ``None``
    when more data is needed. An over-long line is reported once and its
    remainder skipped, so the buffer never exceeds the limit.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._buf = bytearray()
        self._skipping = False
        self._scan_from = 0

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_line(self) -> Line | ProtocolError | None:
        while True:
            nl = self._buf.find(b"\n", self._scan_from)
            if nl < 0:
                if self._over_limit(self._buf):
                    if self._skipping:
                        self._buf.clear()
                        self._scan_from = 0
                        continue
                    self._skipping = True
                    self._buf.clear()
                    self._scan_from = 0
                    return ProtocolError(MESSAGE_TOO_LARGE, f"line longer than {self._max} bytes")
                self._scan_from = len(self._buf)
                return None
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan_from = 0
            if self._skipping:
                # The tail of a line already reported as too long.
                self._skipping = False
                continue
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > self._max:
                return ProtocolError(MESSAGE_TOO_LARGE, f"line longer than {self._max} bytes")
            if b"\x00" in raw:
                return ProtocolError(NUL_BYTE, "NUL bytes are not allowed")
            try:
                return Line(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return ProtocolError(INVALID_UTF8, "line is not valid UTF-8")

    def _over_limit(self, partial: bytearray) -> bool:
        # An unfinished line may hold one byte more than the limit if that
        # byte is the "\r" of a CRLF ending: the limit is on the line's text.
        extra = len(partial) - self._max
        return extra > 1 or (extra == 1 and not partial.endswith(b"\r"))
