"""What a session says to its client: replies, and refusals answered in runs.

:class:`Replies` queues a session's replies behind the notifications already
queued (order kept). A full queue (``queue_size`` items or
``max_queue_bytes`` bytes) is a slow consumer, as for notifications:
``disconnect`` ends the connection with ``slow_consumer``; under ``drop``
the reply waits for room and the connection is not read meanwhile (replies
are never dropped). So a client that sends requests and never reads pins a
bounded amount of memory.

Refused input costs little. A client that streams bad messages (garbage,
unknown events, a wrong token) must not make us write one error per
message. :class:`RefusalRun` is the sans-IO bookkeeping: the first refusal
of a run is answered at once, as a single bad message always was; further
refusals with the same code are only counted, and answered together by one error carrying
``"count"``, the number of messages it stands for::

    {"type":"error","code":"unknown_event","message":"...","count":57}

That summary is sent before the next reply (so order holds), when a refusal
with another code arrives, when the connection ends, and otherwise
:data:`SUMMARY_INTERVAL` seconds after the first refusal it counts. A run
ends with the first message that is accepted.

Error texts are bounded too: :func:`unknown_events` names only the first
:data:`MAX_NAMED` unknown events and counts the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from . import protocol
from .config import SlowPolicy
from .hub import Subscriber
from .payload import Payload
from .protocol import ProtocolError, ServerMessage

#: Seconds a counted refusal waits for its summary at most: short enough that
#: a client sees its mistake quickly, long enough that a stream of garbage
#: costs a couple of writes a second, not one per message.
SUMMARY_INTERVAL = 0.5
#: Unknown event names one ``unknown_event`` error lists; the rest is counted.
MAX_NAMED = 5
#: Catalog names an ``unknown_event`` error offers (``events`` lists them all).
MAX_OFFERED = 20


def _listed(names: Sequence[str], limit: int) -> str:
    text = ", ".join(names[:limit])
    if len(names) > limit:
        text += f" and {len(names) - limit} more"
    return text


def unknown_events(unknown: Sequence[str], catalog: Sequence[str]) -> ProtocolError:
    """The ``unknown_event`` error for ``unknown``, of bounded size."""
    return ProtocolError(
        protocol.UNKNOWN_EVENT,
        f"unknown events: {_listed(unknown, MAX_NAMED)}; "
        f"available: {_listed(catalog, MAX_OFFERED)}",
    )


def error_text(exc: ProtocolError, count: int = 1) -> str:
    """The wire text of the error answering ``count`` refused messages."""
    if count == 1:
        return protocol.encode_server(exc.reply())
    message = f"{exc.message} ({count} messages refused like this)"
    return protocol.encode({"type": "error", "code": exc.code, "message": message, "count": count})


class RefusalRun:
    """One connection's current run of refusals (see the module docstring)."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        #: The latest refusal of the run; None when no run is open.
        self.last: ProtocolError | None = None
        #: Refusals counted since the run's last error was sent.
        self.count = 0

    def refuse(self, exc: ProtocolError) -> list[str]:
        """Record a refusal; return the error texts to send now, in order.

        [] when it was counted (the caller arranges a :meth:`summary` within
        :data:`SUMMARY_INTERVAL` once ``count`` is 1).
        """
        if self.last is not None and self.last.code == exc.code:
            self.last = exc
            self.count += 1
            return []
        texts = [text] if (text := self.summary()) is not None else []
        self.last, self.count = exc, 0
        texts.append(error_text(exc))
        return texts

    def summary(self) -> str | None:
        """The error for the refusals counted so far (None: none); the run
        stays open."""
        if self.last is None or not self.count:
            return None
        text, self.count = error_text(self.last, self.count), 0
        return text

    def end(self) -> str | None:
        """A message was accepted: the run is over. Its last summary, if any."""
        text = self.summary()
        self.last = None
        return text


class Replies:
    """One session's replies (see the module docstring)."""

    __slots__ = ("_kill", "_policy", "_run", "_summary_due", "nursery", "sub")

    def __init__(self, sub: Subscriber, policy: SlowPolicy, kill: Callable[[str], None]) -> None:
        self.sub = sub
        self._policy = policy
        self._kill = kill
        self._run = RefusalRun()
        #: A task will send the run's summary.
        self._summary_due = False
        #: The session's nursery while it runs: where that task starts.
        self.nursery: trio.Nursery | None = None

    async def send(self, msg: ServerMessage) -> None:
        """Reply to an accepted message, after the summary of refusals not
        yet answered."""
        summary = self._run.summary()
        if summary is not None:
            await self._reply(summary)
        await self._reply(protocol.encode_server(msg))

    async def refuse(self, exc: ProtocolError) -> None:
        """Answer a refused message, or count it into the run's summary."""
        for text in self._run.refuse(exc):
            await self._reply(text)
        if self._run.count and not self._summary_due and self.nursery is not None:
            self._summary_due = True
            self.nursery.start_soon(self._send_summary)

    async def accepted(self) -> None:
        """A message was accepted (or the input ended): the run is over."""
        summary = self._run.end()
        if summary is not None:
            await self._reply(summary)

    async def _send_summary(self) -> None:
        await trio.sleep(SUMMARY_INTERVAL)
        self._summary_due = False
        summary = self._run.summary()
        if summary is not None:
            await self._reply(summary)

    async def _reply(self, text: str) -> None:
        payload = Payload(text)
        try:
            # A refused push has written what was held: the reply is last.
            if self.sub.push(payload):
                return
            if self._policy is SlowPolicy.DISCONNECT:
                self._kill(protocol.SLOW_CONSUMER)
                return
            await self.sub.outbox.put(payload)
        except trio.ClosedResourceError:
            pass
