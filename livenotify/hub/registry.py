"""The hub: event -> subscribers, and the publish path.

Every connection is a :class:`~livenotify.hub.delivery.Subscriber` with a
bounded queue drained by that connection's single writer task.
:meth:`Hub.publish` encodes a notification once and hands the shared
:class:`Payload` to each subscriber without waiting: it never awaits a
client. A full queue applies the slow-consumer policy to that subscriber
alone (see :class:`~livenotify.config.SlowPolicy`).

Publishing is two steps so that a cross-server backplane can sit between
them: :meth:`Hub.publish` builds the notification, tells the observers
(storage, e-mail) and calls :meth:`Hub.deliver`, which only fans out locally.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from .. import protocol
from ..config import Config, SlowPolicy
from ..payload import Payload
from .delivery import Coalescer, Subscriber, Writer
from .outbox import Outbox

log = logging.getLogger(__name__)

#: Called with (notification id, event, JSON text) for every publish.
PublishObserver = Callable[[str, str, str], None]


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
        self._observers: list[PublishObserver] = []
        #: Events only granted connections receive, through ``*`` too
        #: (``--private-events``); and, per connection whose token grants
        #: some, the check of its grant (see :meth:`grant`).
        self.private: frozenset[str] = frozenset(config.private_events)
        self._readers: dict[Subscriber, Callable[[str], bool]] = {}
        self._ids = itertools.count(1)
        self.coalescer = Coalescer()

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

    def add_observer(self, observer: PublishObserver) -> None:
        """Call ``observer(id, event, text)`` after every publish."""
        self._observers.append(observer)

    def publish(
        self, event: str, fields: Mapping[str, Any], *, exclude: Subscriber | None = None
    ) -> tuple[str, int]:
        """Publish a notification; return its id and how many got it queued.

        Never awaits: safe to call from anywhere on the Trio thread.
        """
        notification_id = uuid.uuid4().hex
        obj = protocol.notification(event, fields, notification_id, protocol.timestamp())
        payload = Payload(protocol.encode(obj))
        delivered = self.deliver(event, payload, exclude=exclude)
        self.stats.published += 1
        for observer in self._observers:
            observer(notification_id, event, payload.text)
        log.info("publish %s id=%s delivered=%d", event, notification_id, delivered)
        return notification_id, delivered

    def deliver(self, event: str, payload: Payload, *, exclude: Subscriber | None = None) -> int:
        """Queue ``payload`` for every local subscriber of ``event`` or ``*``."""
        delivered = 0
        everyone: Iterable[Subscriber] = self._by_event.get(protocol.ALL_EVENTS, ())
        if everyone and event in self.private:
            # "*" never includes a private event the connection was not
            # granted; public events (the hot path) skip this test.
            readers = self._readers
            everyone = [s for s in everyone if (r := readers.get(s)) is not None and r(event)]
        for sub in everyone:
            if sub is not exclude:
                delivered += self._offer(sub, payload)
        for sub in self._by_event.get(event, ()):
            # Subscribers of "*" already got it above.
            if sub is not exclude and protocol.ALL_EVENTS not in sub.events:
                delivered += self._offer(sub, payload)
        self.stats.messages_out += delivered
        self.coalescer.touch()
        return delivered

    def _offer(self, sub: Subscriber, payload: Payload) -> int:
        try:
            accepted = sub.push(payload)
        except trio.ClosedResourceError:
            # The connection is on its way out; its cleanup will detach it.
            return 0
        if not accepted:
            self.stats.dropped += 1
            if self.config.slow_policy is SlowPolicy.DROP:
                sub.dropped += 1
            else:
                sub.kill(protocol.SLOW_CONSUMER)
            return 0
        sub.delivered += 1
        return 1
