"""A subscriber's bounded outgoing queue (:class:`Outbox`)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..payload import Payload

#: Bytes a subscriber's queue may hold when no limit is given (see
#: ``Limits.max_queue_bytes``).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class Outbox:
    """A subscriber's bounded queue, drained whole by its writer task.

    Leaner than a memory channel for this one job: the writer takes
    everything queued in one call, and ``busy`` tells the publisher whether
    the writer holds a batch it has not finished writing (see
    :meth:`Subscriber.push`). Most connections never queue anything (the
    direct write takes it all), so the writer task is only started by
    ``on_queue``, with the first item ever queued, and the parking lots are
    only made when somebody waits.

    Bounded twice: ``maxlen`` items and ``max_bytes`` bytes on the wire (a
    queue of large replies pins memory long before it holds many). One item
    alone always fits, so a single large message is never refused for its
    size. Bytes are measured framed (``frame``, cached on the payload), as
    the writer will send them.
    """

    __slots__ = (
        "_bytes", "_closed", "_frame", "_items", "_not_empty", "_room", "_tail_first",
        "_tail_offset", "_taken_floor", "busy", "max_bytes", "maxlen", "on_queue", "putting",
    )  # fmt: skip

    def __init__(
        self,
        maxlen: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        frame: Callable[[Payload], bytes] = Payload.line,
    ) -> None:
        self.maxlen = maxlen
        self.max_bytes = max_bytes
        self._frame = frame
        self._bytes = 0
        self._items: list[Payload | bytes] = []
        self._not_empty: trio.lowlevel.ParkingLot | None = None
        self._room: trio.lowlevel.ParkingLot | None = None
        self._closed = False
        #: ``_items[0]`` is the unsent rest of a partly written frame.
        self._tail_first = False
        #: The log offset of the frame whose rest ``_items[0]`` is (0: none).
        self._tail_offset = 0
        #: The lowest log offset in the batch being written (0: none).
        self._taken_floor = 0
        self.busy = False
        #: Replies waiting in :meth:`put` for room.
        self.putting = 0
        #: Called once, when the first item is queued: starts the writer.
        self.on_queue: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes queued, as they will be written."""
        return self._bytes

    def size_of(self, item: Payload | bytes) -> int:
        """The bytes ``item`` takes on the wire."""
        return len(item) if isinstance(item, bytes) else len(self._frame(item))

    def has_room(self, items: int = 1, nbytes: int = 0) -> bool:
        """Whether ``items`` more items of ``nbytes`` bytes in all fit now."""
        if len(self._items) + items > self.maxlen:
            return False
        return self._bytes + nbytes <= self.max_bytes or (not self._items and items == 1)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: nothing more may be queued."""
        return self._closed

    @property
    def idle(self) -> bool:
        """Nothing queued, being written, or waiting for room: a write may
        go straight to the socket without overtaking anything."""
        return not (self.busy or self._items or self.putting)

    def _queued(self) -> None:
        if self._not_empty is not None:
            self._not_empty.unpark()
        elif self.on_queue is not None:
            start_writer, self.on_queue = self.on_queue, None
            start_writer()

    def offer(self, item: Payload | bytes) -> bool:
        """Queue without waiting; False when full. Raises when closed."""
        if self._closed:
            raise trio.ClosedResourceError
        size = self.size_of(item)
        if not self.has_room(1, size):
            return False
        self._items.append(item)
        self._bytes += size
        self._queued()
        return True

    def tail(self, rest: bytes, offset: int = 0) -> None:
        """Queue the unsent rest of a frame whose start was just written
        directly (the queue is empty then); ``offset``: its notification's.
        Raises when closed."""
        if self._closed:
            raise trio.ClosedResourceError
        self._items.append(rest)
        self._bytes += len(rest)
        self._tail_first = True
        self._tail_offset = offset
        self._queued()

    def urgent(self, item: bytes) -> None:
        """Queue a control frame (a ping) ahead of everything not yet being
        written (but after a frame's unsent rest), even when full: it is
        tiny, and a long queue must not delay it. Raises when closed."""
        if self._closed:
            raise trio.ClosedResourceError
        self._items.insert(1 if self._tail_first else 0, item)
        self._bytes += len(item)
        self._queued()

    def extend(self, items: list[Payload]) -> None:
        """Queue deliveries the :class:`Coalescer` held back, past the limit
        if need be (each was counted against it when it was held), or a
        closing message that must get through (goodbye). Raises when closed."""
        if self._closed:
            raise trio.ClosedResourceError
        self._items.extend(items)
        self._bytes += sum(map(self.size_of, items))
        self._queued()

    async def put(self, item: Payload | bytes) -> None:
        """Queue, waiting for room (replies: the client's own backpressure)."""
        # While a reply waits here, nothing is held for the coalescer: held
        # deliveries would be written after it, a goodbye included.
        self.putting += 1
        size = self.size_of(item)
        try:
            while not self.has_room(1, size) and not self._closed:
                if self._room is None:
                    self._room = trio.lowlevel.ParkingLot()
                await self._room.park()
            if self._closed:
                raise trio.ClosedResourceError
            self._items.append(item)
            self._bytes += size
            self._queued()
        finally:
            self.putting -= 1

    async def take(self) -> list[Payload | bytes]:
        """Everything queued (waiting for at least one); [] once closed and empty.

        Marks the outbox ``busy`` until :meth:`done`.
        """
        while not self._items:
            if self._closed:
                return []
            if self._not_empty is None:
                self._not_empty = trio.lowlevel.ParkingLot()
            await self._not_empty.park()
        items, self._items = self._items, []
        self._taken_floor = self._floor(items)
        self._bytes = 0
        self._tail_first = False
        self._tail_offset = 0
        self.busy = True
        if self._room is not None:
            self._room.unpark_all()
        return items

    def done(self) -> None:
        """The batch from :meth:`take` is written."""
        self.busy = False
        self._taken_floor = 0

    def _floor(self, items: list[Payload | bytes]) -> int:
        offsets = [i.offset for i in items if not isinstance(i, bytes) and i.offset]
        if self._tail_first and self._tail_offset:
            offsets.append(self._tail_offset)
        return min(offsets, default=0)

    def unsent_floor(self) -> int:
        """The lowest log offset queued or being written and not known to be
        written whole (0: none): where a resume must start again."""
        floors = [f for f in (self._floor(self._items), self._taken_floor) if f]
        return min(floors, default=0)

    def close(self) -> None:
        """No more items; the writer drains what is left, then stops."""
        self._closed = True
        self.on_queue = None
        if self._not_empty is not None:
            self._not_empty.unpark_all()
        if self._room is not None:
            self._room.unpark_all()
