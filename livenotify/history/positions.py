"""Positions and ``since`` forms: defined with the protocol
(:mod:`livenotify.protocol.positions`), re-exported for the log."""

from ..protocol.positions import (
    ALL,
    MAX_SINCE_LENGTH,
    InvalidPosition,
    Position,
    Since,
    parse_duration,
    parse_position,
    parse_since,
    parse_timestamp,
)

__all__ = [
    "ALL",
    "MAX_SINCE_LENGTH",
    "InvalidPosition",
    "Position",
    "Since",
    "parse_duration",
    "parse_position",
    "parse_since",
    "parse_timestamp",
]
