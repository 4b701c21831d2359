"""One connection's write path, as the hub sees it.

:class:`Subscriber` is a connection: its subscriptions, its bounded
:class:`~.outbox.Outbox` (drained whole by the connection's single writer
task) and the non-blocking direct write that most deliveries take. During a burst the
:class:`Coalescer` holds each subscriber's deliveries for a few scheduler
rounds and writes them together: one ``send()`` carries many notifications
instead of one each (see BENCHMARKS.md).

Nothing here knows a socket: a subscriber writes through a :class:`Writer`,
which the transports satisfy structurally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..payload import Payload
from .outbox import Outbox


class Writer(Protocol):
    """What a subscriber needs of its connection (a transport has it all)."""

    #: "tcp" or "ws", for the console.
    @property
    def kind(self) -> str: ...

    #: "ip:port" of the peer, for logs and the console.
    @property
    def peer(self) -> str: ...

    def frame(self, payload: Payload) -> bytes:
        """``payload`` framed for this connection."""
        ...

    def send_nowait(self, data: bytes) -> int | None:
        """Write what the socket takes now: the byte count, or None when a
        write may not start now."""
        ...


@dataclass(eq=False, slots=True)
class Subscriber:
    """One connection as the hub sees it."""

    id: int
    transport: str
    peer: str
    outbox: Outbox
    #: Ends the connection with a reason code; set by the session.
    kill: Callable[[str], None]
    #: The transport's framing of a payload, and its non-blocking write
    #: (bytes written, or None when a write may not start now).
    frame: Callable[[Payload], bytes]
    send_nowait: Callable[[bytes], int | None]
    events: set[str] = field(default_factory=set)
    email: str | None = None
    #: Notifications dropped under the ``drop`` policy and not yet reported.
    dropped: int = 0
    delivered: int = 0
    #: Deliveries the coalescer holds, oldest first (None: none held), and
    #: their bytes on the wire.
    pending: list[Payload] | None = None
    pending_bytes: int = 0
    coalescer: Coalescer | None = None

    @property
    def queued(self) -> int:
        return len(self.outbox) + len(self.pending or ())

    def push(self, payload: Payload) -> bool:
        """Deliver without waiting; False when the queue is full.

        During a burst (see :class:`Coalescer`) a delivery to a subscriber
        with nothing queued is held, and written together with whatever else
        arrives for it in the next few scheduler rounds. Otherwise the fast
        path writes straight to the socket, as asyncio's
        ``transport.write`` does, when nothing is queued or being written
        for this subscriber: one non-blocking ``send()`` and no task switch.
        What the kernel does not take is queued for the writer task, ahead
        of anything else. Held deliveries count against the queue limit,
        and are written as soon as one more would reach it: a refused
        delivery leaves nothing held.
        """
        outbox = self.outbox
        pending = self.pending
        if pending is not None:
            size = outbox.size_of(payload)
            held = len(pending) + 1
            if held <= Coalescer.HOLD_MAX and outbox.has_room(held, self.pending_bytes + size):
                pending.append(payload)
                self.pending_bytes += size
                return True
            # Holding more would cost memory or the queue limit: write what
            # is held, then this one as if nothing had been held.
            self.flush_pending()
        coalescer = self.coalescer
        if coalescer is not None and coalescer.hot and outbox.idle:
            if outbox.closed:
                raise trio.ClosedResourceError  # ending: nothing more is written
            self.pending = [payload]
            self.pending_bytes = outbox.size_of(payload)
            coalescer.hold(self)
            return True
        if self._write_now(self.frame(payload), payload.offset):
            return True
        return outbox.offer(payload)

    def flush_pending(self) -> None:
        """Write what the coalescer holds for this subscriber now, in one
        ``send()`` when nothing else is queued; what the kernel does not
        take goes to the writer task. Call before closing the outbox."""
        items, self.pending = self.pending, None
        self.pending_bytes = 0
        if not items:
            return
        outbox = self.outbox
        if outbox.closed:
            return  # ending: nothing more is written
        if not (outbox.busy or len(outbox)):
            frames = [self.frame(p) for p in items]
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            sent = self.send_nowait(data)
            if not sent:
                outbox.extend(items)
            elif sent < len(data):
                # The rest stays one queue entry per delivery, so that the
                # queue limit still counts deliveries: the frame cut in two
                # (its unsent rest first), then the untouched ones.
                whole = 0
                while sent >= len(frames[whole]):
                    sent -= len(frames[whole])
                    whole += 1
                if sent:
                    outbox.tail(frames[whole][sent:], items[whole].offset)
                    whole += 1
                if whole < len(items):
                    outbox.extend(items[whole:])
            return
        outbox.extend(items)

    def push_control(self, data: bytes) -> None:
        """Write an already framed control frame (a ping) now, or as the
        writer's next frame; past the queue limit. Raises
        ``trio.ClosedResourceError`` once closing."""
        if not self._write_now(data):
            self.outbox.urgent(data)

    def unsent_floor(self) -> int:
        """The lowest log offset held, queued or being written (0: none)."""
        floors = [p.offset for p in self.pending or () if p.offset]
        floors.append(self.outbox.unsent_floor())
        return min((f for f in floors if f), default=0)

    def _write_now(self, data: bytes, offset: int = 0) -> bool:
        """Write ``data`` straight to the socket when nothing is queued or
        being written; True when it is on its way (all sent, or its unsent
        rest queued first). Raises ``trio.ClosedResourceError`` once closing."""
        outbox = self.outbox
        if outbox.closed:
            raise trio.ClosedResourceError  # ending: nothing more is written
        if outbox.busy or len(outbox):
            return False
        sent = self.send_nowait(data)
        if not sent:  # None: not writable now; 0: the kernel took nothing
            return False
        if sent < len(data):
            outbox.tail(data[sent:], offset)
        return True

    def describe(self) -> str:
        events = ",".join(sorted(self.events)) or "-"
        return (
            f"#{self.id} {self.transport} {self.peer} email={self.email or '-'} "
            f"events={events} queued={self.queued} delivered={self.delivered}"
        )


class Coalescer:
    """Write coalescing for bursts: many notifications per ``send()``.

    Both the kernel's and our own cost are per ``send()`` far more than per
    byte. A publish after a quiet spell is written at once, one ``send()``
    per subscriber, and makes the coalescer *hot*: until the burst pauses,
    :meth:`Subscriber.push` holds each subscriber's deliveries (and
    replies, so that order is kept) in a short list, and :meth:`run`, one
    task of the server's nursery, writes every list in one ``send()`` when
    two scheduler rounds (every runnable task has had its turn) pass with
    no new publish, or every :data:`MAX_ROUNDS` rounds; a subscriber's
    list is also written as soon as it holds :data:`HOLD_MAX`. So a lone
    notification costs nothing extra, and the rest of a burst read from a
    publisher's socket goes to each subscriber in one write. A session
    writes what it holds before it closes its outbox.
    """

    #: Rounds with no new publish that end a burst. Two, because Trio runs
    #: each round's tasks in FIFO or reversed order: a publisher that runs
    #: every round can still miss the span between two of our turns, but
    #: never two such spans in a row.
    QUIET_ROUNDS = 2
    #: Rounds a burst may keep a held delivery waiting.
    MAX_ROUNDS = 16
    #: Deliveries one subscriber may hold before they are written anyway.
    HOLD_MAX = 64

    __slots__ = ("_holders", "_lot", "active", "hot", "publishes")

    def __init__(self) -> None:
        self._holders: list[Subscriber] = []
        self._lot = trio.lowlevel.ParkingLot()
        #: Only while :meth:`run` runs (not in tests that drive a bare hub).
        self.active = False
        #: A burst is on: deliveries are held.
        self.hot = False
        #: Publishes seen, ever: how run() sees that a burst goes on.
        self.publishes = 0

    def touch(self) -> None:
        """A publish was delivered: the ones after it, if they come soon, are a burst."""
        if self.active:
            self.publishes += 1
            if not self.hot:
                self.hot = True
                self._lot.unpark()

    def hold(self, sub: Subscriber) -> None:
        """``sub`` now holds deliveries: :meth:`flush` writes them."""
        self._holders.append(sub)

    def flush(self) -> None:
        """Write everything held, now."""
        holders, self._holders = self._holders, []
        for sub in holders:
            sub.flush_pending()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush held deliveries whenever a burst pauses, forever."""
        self.active = True
        task_status.started()
        try:
            while True:
                if not self.hot:
                    await self._lot.park()
                rounds = quiet = 0
                while quiet < self.QUIET_ROUNDS and rounds < self.MAX_ROUNDS:
                    before = self.publishes
                    # One scheduler round: every task runnable now runs first.
                    await trio.lowlevel.checkpoint()
                    rounds += 1
                    quiet = quiet + 1 if self.publishes == before else 0
                self.flush()
                if quiet == self.QUIET_ROUNDS:
                    self.hot = False  # nothing is held now, and nothing will be
        finally:
            self.active = self.hot = False
            self.flush()
