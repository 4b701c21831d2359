"""``EmbeddedLog``: the notification log in SQLite, through the writer process.

Offsets are given out here, in the server process, synchronously: ``append``
takes the next one, has the notification encoded with it, hands the write to
the :class:`~livenotify.storage.StorageBridge` (it feeds the mail outbox as
before) and keeps the entry in a deque of the last ``history_size``: a replay
of recent history never touches the disk. Older entries (from before this
run, or pushed out of the deque) are read through the writer.

The epoch comes from the writer's start-up (``storage_proc.history``): kept
after a clean stop, new after an unclean one. ``kill -9`` of the writer alone
loses nothing: the bridge replays what it had not acknowledged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from storage_proc.history import stamp

from ..config import Config
from ..storage import StorageBridge, StorageBusy
from .log import HistoryBusy, LogEntry, Replay, matches
from .positions import Position, Since

#: Entries held in memory when history_size is 0 (no size limit on disk).
MEMORY_CAP = 100_000
#: Bytes of notification text held in memory at most: 100,000 entries of
#: up to 64 KiB could pin gigabytes; past this the oldest are read from disk.
MEMORY_BYTES = 64 * 1024 * 1024


def _seconds(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class EmbeddedLog:
    """The log of a single-process deployment; build it once storage runs."""

    def __init__(self, config: Config, storage: StorageBridge) -> None:
        state = storage.log_state
        if not state:
            raise RuntimeError("EmbeddedLog needs a started StorageBridge")
        self._storage = storage
        self._ttl = config.history_ttl
        self._epoch = str(state["epoch"])
        self._head = int(str(state["head"]))
        # Offsets up to base belong to earlier epochs.
        self._base = int(str(state["base"]))
        #: The epoch was kept from the last run (a clean restart).
        self.kept = bool(state["kept"])
        self._started = _seconds(str(state["started"]))
        cap = config.history_size if config.history_size > 0 else MEMORY_CAP
        self._recent: deque[LogEntry] = deque(maxlen=cap)
        self._seqs: deque[int] = deque(maxlen=cap)
        # Storage sequence number of the newest entry pushed out of memory:
        # a disk read waits for its commit, so memory + disk has no hole.
        self._evicted_seq = 0
        self._bytes = 0  # text held in _recent

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
        """The next offset for this notification; HistoryBusy if storage
        cannot take it (no offset is used then)."""
        storage = self._storage
        if storage.full:
            raise HistoryBusy("storage backlog full")
        offset = self._head + 1
        text = encode(Position(self._epoch, offset))
        now = time.time()
        try:
            seq = storage.log_notification(
                notification_id, event, text, offset=offset, epoch=self._epoch, at=stamp(now)
            )
        except StorageBusy as exc:
            raise HistoryBusy(str(exc)) from None
        self._head = offset
        entry = LogEntry(offset, event, text, now)
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._evicted_seq = self._seqs[0]
            self._bytes -= len(recent[0].text)
        recent.append(entry)
        self._seqs.append(seq)
        self._bytes += len(text)
        while self._bytes > MEMORY_BYTES and len(recent) > 1:
            self._evict()
        return entry

    def _evict(self) -> None:
        self._bytes -= len(self._recent.popleft().text)
        self._evicted_seq = self._seqs.popleft()

    async def since(self, since: Since, events: Collection[str]) -> Replay:
        """Entries for ``events`` after ``since``, in offset order, and whether
        that is exact. StorageBusy if older history cannot be read now."""
        self._expire(time.time())
        pos, at = since.position, since.time
        after = 0
        if pos is not None:
            if pos.epoch != self._epoch or pos.offset > self._head:
                return Replay(False, [])  # another continuity, or never given out
            after = max(pos.offset, self._base)
        recent = self._recent
        first = recent[0].offset if recent else self._head + 1
        newer = [
            e
            for e in recent
            if e.offset > after and (at is None or e.time >= at) and matches(e.event, events)
        ]
        if pos is not None and first <= after + 1:
            return Replay(True, newer)  # memory holds all of it
        if at is not None and recent and recent[0].time < at:
            return Replay(True, newer)  # memory reaches back past that time
        recovered, older = await self._disk(since, after, first, events)
        return Replay(recovered, older + newer if recovered or pos is None else [])

    async def _disk(
        self, since: Since, after: int, before: int, events: Collection[str]
    ) -> tuple[bool, list[LogEntry]]:
        storage = self._storage
        if self._evicted_seq:
            await storage.committed(self._evicted_seq)
        at = since.time
        answer = await storage.query(
            "history", self._epoch, after, None if at is None else stamp(at), before
        )
        assert isinstance(answer, dict)
        floor, base = int(answer["floor"]), int(answer["base"])
        if floor < 0:
            return False, []
        entries = [
            LogEntry(o, ev, text, _seconds(t))
            for o, ev, text, t in answer["rows"]
            if matches(ev, events)
        ]
        if since.position is not None:
            # Exact when history still reaches just past the position.
            return after >= floor, entries
        # Nothing of this epoch trimmed, and no epoch before it (base 0), or
        # it began before the time asked for: nothing older is missing.
        whole = floor == base and (base == 0 or (at is not None and self._started <= at))
        if at is None:
            return whole, entries  # "all"
        first_time = answer["first_time"]
        reaches = first_time is not None and _seconds(str(first_time)) <= at
        return reaches or whole, entries

    def _expire(self, now: float) -> None:
        if self._ttl <= 0:
            return
        recent, cutoff = self._recent, now - self._ttl
        while recent and recent[0].time < cutoff:
            self._evict()
