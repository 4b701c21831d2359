"""Replaying history to one subscriber with no gap and no duplicate while
publishes race it (DESIGN "Positions and history").

The subscriber is put in *recovering* mode before it is subscribed
(:meth:`Hub.begin_recovery`): live deliveries for it are buffered, bounded
by the queue size. Then :func:`replay` reads the history, answers
(``subscribed`` / ``registered`` with ``recovered`` and ``replayed``),
queues the replayed notifications and the buffered live ones merged by
offset (a buffered one that was also replayed is skipped), awaiting queue
room rather than treating the subscriber as slow, and returns the
subscriber to direct delivery once the buffer is empty.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

import trio

from . import protocol
from .backplane import BackendUnavailable, Sent
from .history import HistoryBusy, InvalidPosition, Replay, Since, parse_since
from .hub import Hub, Subscriber
from .payload import Payload
from .protocol import ProtocolError
from .storage import StorageBridge, StorageBusy

log = logging.getLogger(__name__)

#: Sends the answer: (how the recovery went, the head ``E:N``).
Answer = Callable[[protocol.Recovery, str], Awaitable[None]]


class Replayer:
    """One recovery of one subscriber; :attr:`floor` is the lowest offset
    not yet queued (0: none), for the resume position if it is cut short."""

    def __init__(self, hub: Hub, sub: Subscriber) -> None:
        self.hub = hub
        self.sub = sub
        self.floor = 0
        #: The connection ended while replaying: :attr:`floor` stays.
        self.cut = False

    async def run(self, since: Since | None, events: Collection[str], answer: Answer) -> None:
        """Replay ``events`` after ``since`` (None: nothing to resume from:
        ``recovered`` false, nothing replayed), then the live backlog."""
        hub, sub = self.hub, self.sub
        done = False
        try:
            replay = Replay(False, [])
            if since is not None:
                try:
                    replay = await hub.backplane.history(since, events)
                except (StorageBusy, BackendUnavailable) as exc:
                    log.warning("replay #%d: history unreadable: %s", sub.id, exc)
            # History knows nothing of grants: a private event the connection
            # may not receive is never replayed (its live copy is withheld).
            entries = [e for e in replay.entries if hub.may_receive(sub, e.event)]
            if entries:
                # Until they are queued, a cut connection resumes from here.
                self.floor = entries[0].offset
            await answer(protocol.Recovery(replay.recovered, len(entries)), str(hub.position))
            replayed = {e.offset for e in entries}
            # What the client already had (a since ahead of a slower
            # process's reader is delivered live meanwhile) is not sent again.
            after = 0
            position = since.position if since is not None else None
            if position is not None and position.epoch == hub.position.epoch:
                after = position.offset

            def fresh(payloads: Iterable[Payload]) -> Iterable[Payload]:
                return (p for p in payloads if p.offset > after and p.offset not in replayed)

            old = (Payload(e.text, e.offset) for e in entries)
            live = list(fresh(hub.take_buffered(sub)))
            if not await self._queue(heapq.merge(old, live, key=_offset)):
                return
            while more := hub.take_buffered(sub):
                if not await self._queue(fresh(more)):
                    return
            # No checkpoint since the buffer was seen empty: nothing is lost.
            done = True
        finally:
            if done:
                self.floor = 0
            else:
                floors = (self.floor, hub.buffered_floor(sub))
                self.floor = min((f for f in floors if f), default=0)
                self.cut = True
            hub.end_recovery(sub)

    async def _queue(self, payloads: Iterable[Payload]) -> bool:
        """Queue ``payloads`` in order; False when the connection ended first
        (:attr:`floor` is then the first one not queued)."""
        sub, stats = self.sub, self.hub.stats
        for payload in payloads:
            self.floor = payload.offset
            try:
                if not sub.push(payload):
                    # The client's own backpressure, not the slow-consumer policy.
                    await sub.outbox.put(payload)
            except trio.ClosedResourceError:
                return False  # the connection is ending
            sub.delivered += 1
            stats.messages_out += 1
        return True


def _offset(payload: Payload) -> int:
    return payload.offset


async def publish(
    hub: Hub, event: str, fields: Mapping[str, Any], *, exclude: Subscriber | None = None
) -> Sent:
    """Publish through the hub; a log that cannot take it is ``busy`` (or
    ``backend_unavailable``): nothing was delivered."""
    try:
        return await hub.publish(event, fields, exclude=exclude)
    except HistoryBusy:
        raise ProtocolError(protocol.BUSY, "the notification log is busy; try again") from None
    except BackendUnavailable:
        raise ProtocolError(
            protocol.BACKEND_UNAVAILABLE, "the backend is unavailable; try again"
        ) from None


def since_now(text: str) -> Since:
    """A checked ``since`` text as a :class:`Since`, durations counted from now."""
    try:
        return parse_since(text, time.time())
    except InvalidPosition as exc:
        raise ProtocolError(protocol.INVALID_POSITION, str(exc)) from None


def save_position(hub: Hub, sub: Subscriber, storage: StorageBridge, replay_floor: int) -> None:
    """A registered connection ends: remember up to where it got every
    notification (before the lowest one still held, queued, being written,
    buffered or not yet replayed), for ``register ... resume``."""
    assert sub.email is not None
    floors = (sub.unsent_floor(), hub.buffered_floor(sub), replay_floor)
    floor = min((f for f in floors if f), default=0)
    position = hub.position
    offset = floor - 1 if floor else position.offset
    try:
        storage.save_position(sub.email, position.epoch, offset)
    except StorageBusy:
        log.warning("storage busy: resume position of #%d not saved", sub.id)
