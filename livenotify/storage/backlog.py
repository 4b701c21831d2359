"""The bridge's book of writes: sequence numbers, the un-acknowledged
backlog, and what reads must add to what is committed. Pure: no trio, no I/O.

Every accepted write gets the next sequence number and stays here until the
writer acknowledges a commit covering it. Up to ``acked`` everything is
committed, up to ``sent`` it is with the current writer, up to ``seq`` it is
accepted. A new writer gets everything after ``acked`` again (writes are
idempotent, so a replay of a committed write changes nothing).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from storage_proc.ops import (
    LogNotification,
    MarkQueued,
    PositionWrite,
    SubscribeWrite,
    UnsubscribeWrite,
    Write,
    pack,
)

from .errors import StorageBusy


class Backlog:
    """Accepted writes until acknowledged, bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seq = 0
        self.sent = 0
        self.acked = 0
        self.unacked: dict[int, Write] = {}
        # Un-acknowledged subscription writes by e-mail, in order (for
        # read-your-writes) and outbox ids being marked queued.
        self._pending_subs: dict[str, deque[SubscribeWrite | UnsubscribeWrite]] = {}
        self.pending_queued: Counter[int] = Counter()
        # The latest un-acknowledged position write by e-mail, and its seq.
        self._pending_positions: dict[str, tuple[int, PositionWrite]] = {}

    def __len__(self) -> int:
        return len(self.unacked)

    @property
    def full(self) -> bool:
        """True when the next :meth:`push` would raise StorageBusy."""
        return len(self.unacked) >= self.limit

    def push(self, write: Write) -> int:
        """Accept ``write``; its sequence number. StorageBusy when full."""
        if self.full:
            raise StorageBusy(f"storage backlog full ({len(self.unacked)} unacknowledged writes)")
        self.seq += 1
        self.unacked[self.seq] = write
        if isinstance(write, SubscribeWrite | UnsubscribeWrite):
            self._pending_subs.setdefault(write.email, deque()).append(write)
        elif isinstance(write, MarkQueued):
            self.pending_queued.update(write.outbox_ids)
        elif isinstance(write, PositionWrite):
            self._pending_positions[write.email] = (self.seq, write)
        return self.seq

    def acknowledge(self, seq: int) -> bool:
        """Drop writes up to ``seq``; True if a logged notification was among them."""
        seq = min(seq, self.seq)
        logged = False
        unacked, pending_subs = self.unacked, self._pending_subs
        for s in range(self.acked + 1, seq + 1):
            write = unacked.pop(s)
            kind = type(write)
            if kind is SubscribeWrite or kind is UnsubscribeWrite:
                queue = pending_subs[write.email]  # type: ignore[union-attr]
                queue.popleft()
                if not queue:
                    del pending_subs[write.email]  # type: ignore[union-attr]
            elif isinstance(write, MarkQueued):
                self.pending_queued.subtract(write.outbox_ids)
                for outbox_id in write.outbox_ids:
                    if self.pending_queued[outbox_id] <= 0:
                        del self.pending_queued[outbox_id]
            elif kind is LogNotification:
                logged = True
            elif isinstance(write, PositionWrite):
                latest = self._pending_positions.get(write.email)
                if latest is not None and latest[0] == s:
                    del self._pending_positions[write.email]
        self.acked = max(self.acked, seq)
        self.sent = max(self.sent, self.acked)
        return logged

    def restart(self) -> None:
        """A new writer: everything not acknowledged is to be sent again."""
        self.sent = self.acked

    def pending_subscriptions(self, email: str) -> list[SubscribeWrite | UnsubscribeWrite]:
        """``email``'s accepted, not yet acknowledged (un)subscribe writes, in order."""
        return list(self._pending_subs.get(email, ()))

    def pending_position(self, email: str) -> PositionWrite | None:
        """``email``'s latest accepted, not yet acknowledged position write."""
        latest = self._pending_positions.get(email)
        return None if latest is None else latest[1]

    @staticmethod
    def apply_subscriptions(
        stored: Iterable[str], pending: list[SubscribeWrite | UnsubscribeWrite]
    ) -> list[str]:
        """``stored`` events with ``pending`` writes applied in order, sorted.

        Applying a write the store already reflects changes nothing: the last
        write touching an event decides it either way.
        """
        events = set(stored)
        for write in pending:
            if isinstance(write, SubscribeWrite):
                events.update(write.events)
            else:
                events.difference_update(write.events)
        return sorted(events)

    def next_chunk(
        self, in_flight_limit: int, max_writes: int, max_bytes: int
    ) -> tuple[int, list[tuple[object, ...]]] | None:
        """The next run of writes to send (first sequence number, packed
        rows), marked sent; None when nothing is due or the window is full."""
        room = in_flight_limit - (self.sent - self.acked)
        if self.sent >= self.seq or room <= 0:
            return None
        first = self.sent + 1
        stop = min(self.seq, self.sent + min(room, max_writes))
        rows: list[tuple[object, ...]] = []
        size = 0
        for s in range(first, stop + 1):
            write = self.unacked[s]
            rows.append(pack(write))
            if type(write) is LogNotification:
                size += len(write.payload)
                if size >= max_bytes:
                    break
        self.sent = first + len(rows) - 1
        return first, rows
