"""Positions in the notification log and the ``since`` forms, as text. Pure.

A position is ``E:N``: the log's epoch and an offset. ``since`` is a
position (text or ``{"epoch": E, "offset": N}``), a duration (``90s``,
``10m``, ``2h``, ``1d``, or a sum like ``1h30m``), an RFC 3339 timestamp, or
``all``. Anything else raises :class:`InvalidPosition`, a ``ValueError``
whose :attr:`~InvalidPosition.code` the protocol maps to ``invalid_position``.

Part of the sans-IO protocol package (the publisher imports the protocol
and must not load Trio); :mod:`livenotify.history` re-exports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

#: Epochs are short tokens we make (8 hex digits); accept a little more.
_EPOCH: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_OFFSET: Final = re.compile(r"[0-9]{1,18}")
_DURATION: Final = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]{1,6})?[smhd])+")
_PART: Final = re.compile(r"([0-9.]+)([smhd])")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: Longest text accepted as a ``since`` value.
MAX_SINCE_LENGTH: Final = 64


class InvalidPosition(ValueError):
    """A malformed position or ``since`` value (error code ``invalid_position``)."""

    code: Final = "invalid_position"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the log: ``offset`` in ``epoch`` (0: before the first)."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Since:
    """Where a replay starts: exactly one of ``position`` and ``time`` is
    set, or neither for ``all``."""

    position: Position | None = None
    #: Seconds since the Unix epoch.
    time: float | None = None

    @property
    def is_all(self) -> bool:
        return self.position is None and self.time is None


ALL: Final = Since()


def parse_position(value: object) -> Position:
    """``"E:N"`` or ``{"epoch": E, "offset": N}`` as a :class:`Position`."""
    if isinstance(value, dict):
        epoch, offset = value.get("epoch"), value.get("offset")
        if set(value) != {"epoch", "offset"} or not isinstance(epoch, str):
            raise InvalidPosition('a position object is {"epoch": E, "offset": N}')
        if type(offset) is not int or offset < 0:
            raise InvalidPosition("a position's offset is a non-negative integer")
        if not _EPOCH.fullmatch(epoch):
            raise InvalidPosition(f"bad epoch {epoch[:40]!r}")
        return Position(epoch, offset)
    if not isinstance(value, str):
        raise InvalidPosition("a position is text 'E:N' or an object")
    epoch, sep, offset = value.partition(":")
    if not sep or not _EPOCH.fullmatch(epoch) or not _OFFSET.fullmatch(offset):
        raise InvalidPosition(f"bad position {value[:40]!r}; expected EPOCH:OFFSET")
    return Position(epoch, int(offset))


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``2h``, ``1d``, ``1h30m`` in seconds."""
    if not _DURATION.fullmatch(text):
        raise InvalidPosition(f"bad duration {text[:40]!r}; expected e.g. 10m, 2h, 1d")
    return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))


def parse_timestamp(text: str) -> float:
    """An RFC 3339 timestamp (with ``Z`` or an offset) in Unix seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidPosition(f"bad timestamp {text[:40]!r}; expected RFC 3339") from None
    if moment.tzinfo is None or "T" not in text.upper():
        raise InvalidPosition(f"timestamp {text[:40]!r} needs a date, a time and a zone")
    return moment.timestamp()


def parse_since(value: object, now: float) -> Since:
    """Any ``since`` form; durations count back from ``now`` (Unix seconds)."""
    if isinstance(value, dict):
        return Since(position=parse_position(value))
    if not isinstance(value, str):
        raise InvalidPosition("since is a position, a duration, a timestamp or 'all'")
    if len(value) > MAX_SINCE_LENGTH:
        raise InvalidPosition(f"since is at most {MAX_SINCE_LENGTH} characters")
    if value == "all":
        return ALL
    if value[:1].isdigit() and value[-1:] in _UNITS and _DURATION.fullmatch(value):
        return Since(time=now - parse_duration(value))
    if "-" in value[:5] and len(value) >= 20 and value[4] == "-":
        return Since(time=parse_timestamp(value))
    return Since(position=parse_position(value))
