"""The notification log's interface, whatever keeps it (embedded SQLite
today, a Redis stream later).

Every notification gets, synchronously at publish time and before it is
encoded, the next offset (1, 2, 3, ... with no gap, across all events) in
the log's current epoch. ``since`` answers a replay: the entries a
subscriber missed, and whether that answer is exact (``recovered``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .positions import Position, Since


class HistoryBusy(Exception):
    """The log cannot take this notification now: refuse the publish (``busy``)
    rather than deliver it with a hole in the history."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One notification in the log."""

    offset: int
    event: str
    #: The notification as encoded for clients (it carries its position).
    text: str
    #: When it was appended, Unix seconds.
    time: float


class Replay(NamedTuple):
    """What ``since`` found."""

    #: True only when ``entries`` is every matching notification after the
    #: position (or time) asked for.
    recovered: bool
    #: In offset order.
    entries: list[LogEntry]


def matches(event: str, events: Collection[str]) -> bool:
    """Whether a subscriber to ``events`` gets ``event`` (``*`` is every event)."""
    return event in events or "*" in events


class NotificationLog(Protocol):
    """What the hub and the sessions need of the log."""

    @property
    def epoch(self) -> str:
        """The log's current continuity."""
        ...

    @property
    def head(self) -> int:
        """The last offset given out (0 before the first)."""
        ...

    @property
    def position(self) -> Position:
        """``Position(epoch, head)``."""
        ...

    def append(
        self, notification_id: str, event: str, encode: Callable[[Position], str]
    ) -> LogEntry:
        """Give the notification the next offset; ``encode`` turns its
        position into the text clients get (called once). Raises
        :class:`HistoryBusy` and takes no offset when the log cannot take it."""
        ...

    async def since(self, since: Since, events: Collection[str]) -> Replay:
        """The entries for ``events`` after ``since``, in offset order."""
        ...
