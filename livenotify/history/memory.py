"""``MemoryLog``: a notification log held in memory only.

For a hub that runs without storage (unit tests, benchmarks of the hub
alone): offsets and replay work as with :class:`~.embedded.EmbeddedLog`,
but nothing survives the process, so every run is a new epoch.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Collection

from .log import LogEntry, Replay, matches
from .positions import Position, Since


class MemoryLog:
    """The last ``size`` notifications, in memory; a new epoch per instance."""

    def __init__(self, size: int = 10_000) -> None:
        self._epoch = secrets.token_hex(4)
        self._head = 0
        self._recent: deque[LogEntry] = deque(maxlen=max(size, 1))

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def head(self) -> int:
        return self._head

    @property
    def position(self) -> Position:
        return Position(self._epoch, self._head)

    def append(
        self, notification_id: str, event: str, encode: Callable[[Position], str]
    ) -> LogEntry:
        """The next offset for this notification (never busy)."""
        offset = self._head + 1
        entry = LogEntry(offset, event, encode(Position(self._epoch, offset)), time.time())
        self._head = offset
        self._recent.append(entry)
        return entry

    async def since(self, since: Since, events: Collection[str]) -> Replay:
        """Entries for ``events`` after ``since``; exact while memory reaches back."""
        pos, at = since.position, since.time
        recent = self._recent
        first = recent[0].offset if recent else self._head + 1
        if pos is not None:
            if pos.epoch != self._epoch or pos.offset > self._head or first > pos.offset + 1:
                return Replay(False, [])
            return Replay(
                True, [e for e in recent if e.offset > pos.offset and matches(e.event, events)]
            )
        entries = [e for e in recent if (at is None or e.time >= at) and matches(e.event, events)]
        whole = first == 1 or (at is not None and bool(recent) and recent[0].time < at)
        return Replay(whole, entries)
