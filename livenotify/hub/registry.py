"""The hub: event -> subscribers, and the publish path.

Every connection is a :class:`~livenotify.hub.delivery.Subscriber` with a
bounded queue drained by that connection's single writer task.
:meth:`Hub.publish` encodes a notification once and hands the shared
:class:`Payload` to each subscriber without waiting: it never awaits a
client. A full queue applies the slow-consumer policy to that subscriber
alone (see :class:`~livenotify.config.SlowPolicy`).

Publishing goes through the backplane (:mod:`livenotify.backplane`):
:meth:`Hub.publish` asks it for the notification's offset (the log refuses
it when full: nothing is delivered), and the backplane calls
:meth:`Hub.deliver_entry`, which only fans out locally. While a subscriber
recovers history, its deliveries are buffered (:meth:`Hub.begin_recovery`).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from .. import protocol
from ..backplane import Backplane, LocalBackplane, Sent
from ..config import Config, SlowPolicy
from ..history import LogEntry, MemoryLog, Position
from ..payload import Payload
from .delivery import Coalescer, Subscriber, Writer
from .outbox import Outbox

log = logging.getLogger(__name__)


class _Buffer(list[Payload]):
    """A recovering subscriber's live deliveries, and their size in bytes."""

    __slots__ = ("nbytes",)

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0


#: ``observer(event, sent)``, called after every publish this process made.
PublishObserver = Callable[[str, Sent], None]


@dataclass
class HubStats:
    """Counters the console's ``stats`` prints."""

    connections_total: int = 0
    messages_in: int = 0
    messages_out: int = 0
    published: int = 0
    dropped: int = 0
    #: Messages refused with an error (one summary error may stand for many).
    refused: int = 0
    #: Reads held back by the rate limit until the bucket refilled.
    throttled: int = 0
    #: Connections refused at accept (``too_many_connections``).
    refused_connections: int = 0
    disconnects: Counter[str] = field(default_factory=Counter)


class Hub:
    """Event -> subscribers, with a bounded queue per subscriber."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog: tuple[str, ...] = config.events
        self._catalog_set = frozenset(config.events)
        self._by_event: dict[str, set[Subscriber]] = {}
        self.connections: dict[int, Subscriber] = {}
        self.stats = HubStats()
        #: Called with every publish this process made (``/metrics`` times some).
        self._observers: list[PublishObserver] = []
        #: Events only granted connections receive, through ``*`` too
        #: (``--private-events``); and, per connection whose token grants
        #: some, the check of its grant (see :meth:`grant`).
        self.private: frozenset[str] = frozenset(config.private_events)
        self._readers: dict[Subscriber, Callable[[str], bool]] = {}
        self._ids = itertools.count(1)
        self.coalescer = Coalescer()
        #: Subscribers recovering history, and the live deliveries buffered
        #: for each meanwhile (see :meth:`begin_recovery`).
        self._recovering: dict[Subscriber, _Buffer] = {}
        #: In memory until the server gives it its own (:meth:`use`).
        self.backplane: Backplane = LocalBackplane(MemoryLog(), self.deliver_entry)

    # -- connections ---------------------------------------------------------

    def attach(self, writer: Writer, kill: Callable[[str], None]) -> Subscriber:
        """Register a new connection and give it its queue."""
        outbox = Outbox(self.config.queue_size, self.config.limits.max_queue_bytes, writer.frame)
        sub = Subscriber(
            next(self._ids), writer.kind, writer.peer, outbox,
            kill, writer.frame, writer.send_nowait, coalescer=self.coalescer,
        )  # fmt: skip
        self.connections[sub.id] = sub
        self.stats.connections_total += 1
        return sub

    def detach(self, sub: Subscriber, reason: str) -> None:
        """Forget a connection: every subscription goes with it."""
        sub.pending = None
        self._recovering.pop(sub, None)
        for event in sub.events:
            subs = self._by_event.get(event)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_event[event]
        sub.events.clear()
        self._readers.pop(sub, None)
        self.connections.pop(sub.id, None)
        self.stats.disconnects[reason] += 1

    # -- subscriptions -------------------------------------------------------

    def is_known(self, event: str) -> bool:
        return event == protocol.ALL_EVENTS or event in self._catalog_set

    def unknown(self, events: Iterable[str]) -> list[str]:
        return [e for e in events if not self.is_known(e)]

    def subscribe(self, sub: Subscriber, events: Iterable[str]) -> None:
        for event in events:
            if event not in sub.events:
                sub.events.add(event)
                self._by_event.setdefault(event, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, events: Iterable[str]) -> None:
        for event in events:
            if event in sub.events:
                sub.events.discard(event)
                subs = self._by_event[event]
                subs.discard(sub)
                if not subs:
                    del self._by_event[event]

    def grant(self, sub: Subscriber, may_read: Callable[[str], bool] | None) -> None:
        """Which private events ``sub`` may receive through ``*`` (None: none).

        A subscription to a private event by name is checked by the session
        before it is made; this only widens what ``*`` delivers.
        """
        if may_read is None:
            self._readers.pop(sub, None)
        else:
            self._readers[sub] = may_read

    @property
    def subscription_count(self) -> int:
        return sum(len(s) for s in self._by_event.values())

    # -- publishing ----------------------------------------------------------

    def use(self, backplane: Backplane) -> None:
        """Publish through ``backplane`` from now on (the server's, once
        storage runs); then :meth:`run_backplane` it."""
        self.backplane = backplane

    async def run_backplane(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the backplane, delivering what it orders to local subscribers."""
        await self.backplane.run(self.deliver_entry, task_status=task_status)

    @property
    def position(self) -> Position:
        """The log's head (the welcome's ``position``)."""
        return self.backplane.position

    def add_observer(self, observer: PublishObserver) -> None:
        """Call ``observer(event, sent)`` after every publish this process makes."""
        self._observers.append(observer)

    async def publish(
        self, event: str, fields: Mapping[str, Any], *, exclude: Subscriber | None = None
    ) -> Sent:
        """Publish a notification: it takes the next offset and is delivered.

        Raises HistoryBusy / BackendUnavailable when the log refuses it
        (nothing is delivered then). The local backplane never yields here.
        """
        sent = await self.backplane.publish(event, fields, exclude=exclude)
        self._published(event, sent)
        return sent

    def publish_nowait(
        self, event: str, fields: Mapping[str, Any], *, exclude: Subscriber | None = None
    ) -> Sent:
        """:meth:`publish` for sync callers; only with a local backplane."""
        backplane = self.backplane
        if not isinstance(backplane, LocalBackplane):
            raise TypeError("publish_nowait needs the local backplane")
        sent = backplane.publish_nowait(event, fields, exclude=exclude)
        self._published(event, sent)
        return sent

    def _published(self, event: str, sent: Sent) -> None:
        self.stats.published += 1
        for observer in self._observers:
            observer(event, sent)
        log.info(
            "publish %s id=%s offset=%d delivered=%d", event, sent.id, sent.offset, sent.delivered
        )

    def deliver_entry(self, entry: LogEntry, payload: Payload, exclude: object | None) -> int:
        """The backplane's :data:`~livenotify.backplane.Deliver`."""
        payload.offset = entry.offset
        return self.deliver(
            entry.event, payload, exclude=exclude if isinstance(exclude, Subscriber) else None
        )

    def deliver(self, event: str, payload: Payload, *, exclude: Subscriber | None = None) -> int:
        """Queue ``payload`` for every local subscriber of ``event`` or ``*``."""
        if self._recovering:
            return self._deliver_recovering(event, payload, exclude)
        delivered = 0
        for sub in self._everyone(event):
            if sub is not exclude:
                delivered += self._offer(sub, payload)
        for sub in self._by_event.get(event, ()):
            # Subscribers of "*" already got it above.
            if sub is not exclude and protocol.ALL_EVENTS not in sub.events:
                delivered += self._offer(sub, payload)
        self.stats.messages_out += delivered
        self.coalescer.touch()
        return delivered

    def deliver_exact(self, event: str, payload: Payload) -> int:
        """Queue ``payload`` for the subscribers of exactly ``event``, not of
        ``*``, through the same per-subscriber path, counting nothing: the
        ``/ready`` canary's probe (a reserved event no client can name)."""
        delivered = 0
        for sub in tuple(self._by_event.get(event, ())):
            try:
                delivered += sub.push(payload)
            except trio.ClosedResourceError:
                pass
        self.coalescer.touch()
        return delivered

    def may_receive(self, sub: Subscriber, event: str) -> bool:
        """Whether ``sub`` gets ``event`` by its subscriptions and grant (the
        filter :meth:`deliver` applies, for a replay)."""
        if event in sub.events:
            return True
        if protocol.ALL_EVENTS not in sub.events:
            return False
        if event not in self.private:
            return True
        reader = self._readers.get(sub)
        return reader is not None and reader(event)

    def _everyone(self, event: str) -> Iterable[Subscriber]:
        """The subscribers of ``*`` that get ``event``."""
        everyone: Iterable[Subscriber] = self._by_event.get(protocol.ALL_EVENTS, ())
        if everyone and event in self.private:
            # "*" never includes a private event the connection was not
            # granted; public events (the hot path) skip this test.
            readers = self._readers
            everyone = [s for s in everyone if (r := readers.get(s)) is not None and r(event)]
        return everyone

    def _deliver_recovering(self, event: str, payload: Payload, exclude: Subscriber | None) -> int:
        """:meth:`deliver` while some subscriber recovers (rare: kept off the
        fast path). A recovering subscriber's deliveries are buffered."""
        recovering = self._recovering
        delivered = buffered = 0

        def offer(sub: Subscriber) -> int:
            nonlocal buffered
            buffer = recovering.get(sub)
            if buffer is None:
                return self._offer(sub, payload)
            size = len(payload.text)
            # Bounded as the queue is: in items and in bytes.
            if (
                len(buffer) < self.config.queue_size
                and buffer.nbytes + size <= self.config.limits.max_queue_bytes
            ):
                buffer.append(payload)
                buffer.nbytes += size
                buffered += 1
                return 1
            self._refused(sub)
            return 0

        for sub in self._everyone(event):
            if sub is not exclude:
                delivered += offer(sub)
        for sub in self._by_event.get(event, ()):
            if sub is not exclude and protocol.ALL_EVENTS not in sub.events:
                delivered += offer(sub)
        # A buffered one is counted out when the replay queues it.
        self.stats.messages_out += delivered - buffered
        self.coalescer.touch()
        return delivered

    # -- recovery --------------------------------------------------------------

    def begin_recovery(self, sub: Subscriber) -> None:
        """Buffer ``sub``'s deliveries (bounded by the queue size; overflow is
        the slow-consumer policy) until :meth:`end_recovery`."""
        self._recovering.setdefault(sub, _Buffer())

    def take_buffered(self, sub: Subscriber) -> list[Payload]:
        """The deliveries buffered for ``sub`` so far, oldest first; it stays
        recovering."""
        buffer = self._recovering.get(sub)
        if not buffer:
            return []
        self._recovering[sub] = _Buffer()
        return buffer

    def buffered_floor(self, sub: Subscriber) -> int:
        """The lowest offset buffered for a recovering ``sub`` (0: none)."""
        return min((p.offset for p in self._recovering.get(sub, ())), default=0)

    def end_recovery(self, sub: Subscriber) -> list[Payload]:
        """Deliver to ``sub`` directly again; what was still buffered."""
        return self._recovering.pop(sub, [])

    def _refused(self, sub: Subscriber) -> None:
        self.stats.dropped += 1
        if self.config.slow_policy is SlowPolicy.DROP:
            sub.dropped += 1
        else:
            sub.kill(protocol.SLOW_CONSUMER)

    def _offer(self, sub: Subscriber, payload: Payload) -> int:
        try:
            accepted = sub.push(payload)
        except trio.ClosedResourceError:
            # The connection is on its way out; its cleanup will detach it.
            return 0
        if not accepted:
            self._refused(sub)
            return 0
        sub.delivered += 1
        return 1
