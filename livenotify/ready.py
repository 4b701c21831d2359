"""``GET /ready``: whether this server can do its work now, part by part.

200 when every part is ok, else 503; the body names each part either way::

    {"status": "ok", "storage": {"ok": true, "alive": true, "backlog": 0, ...},
     "mail": {"ok": true, "broker": "up", ...}, "backplane": {"ok": true, "kind": "local"},
     "canary": {"ok": true, "seconds": 0.0003}}

- storage: the writer process answers a read within :data:`DEADLINE`
  (a stopped or wedged writer does not) and its backlog is not full;
- mail: the dispatcher's view of the Celery broker (reachable at its last
  hand-off);
- backplane: the hub's backplane (``local``: always ok; ``redis``: while
  the shared log answers);
- canary: a probe notification on a reserved event, delivered through the
  hub's per-subscriber path (direct write, coalescer, queue) to an internal
  subscriber and seen back within :data:`DEADLINE`. It takes no offset, is
  not stored, and reaches no client: the event is not a valid event name, so
  no client can subscribe to it, and ``*`` subscribers are skipped.

The checks run concurrently, so an answer takes at most about DEADLINE.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Final, Protocol

import trio

from . import protocol
from .hub import Hub, Outbox, Subscriber
from .mail import MailService
from .payload import Payload
from .storage import StorageBridge, StorageBusy

__all__ = ["CANARY_EVENT", "Canary", "ReadySource", "check"]

#: Seconds each check may take.
DEADLINE: Final = 2.0
#: The canary's event: ``$`` is not allowed in event names, so no catalog
#: and no client subscription can hold it.
CANARY_EVENT: Final = "$canary"
#: An address no one registers: the storage probe's read.
PROBE_EMAIL: Final = "ready-probe@livenotify.invalid"


class Canary:
    """Probes the delivery path with an internal subscriber."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._ids = itertools.count(1)
        #: Probe payload bytes still expected -> the event their arrival sets.
        self._waiting: dict[bytes, trio.Event] = {}

    def _receive(self, data: bytes) -> int:
        # The subscriber's "socket": takes everything, and recognises the
        # probes (several may be in flight, coalesced into one write).
        for frame, arrived in list(self._waiting.items()):
            if frame in data:
                arrived.set()
        return len(data)

    async def probe(self, deadline: float = DEADLINE) -> dict[str, Any]:
        """Publish a probe to the internal subscriber; ok if it arrives in time."""
        hub, number = self._hub, next(self._ids)
        payload = Payload(protocol.encode({"type": CANARY_EVENT, "probe": number}))
        limits = hub.config.limits
        sub = Subscriber(
            0, "canary", "internal", Outbox(hub.config.queue_size, limits.max_queue_bytes),
            lambda reason: None, Payload.line, self._receive, coalescer=hub.coalescer,
        )  # fmt: skip
        arrived = self._waiting[payload.line()] = trio.Event()
        started = time.perf_counter()
        hub.subscribe(sub, [CANARY_EVENT])
        try:
            with trio.move_on_after(deadline):
                if hub.deliver_exact(CANARY_EVENT, payload):
                    await arrived.wait()
        finally:
            hub.unsubscribe(sub, [CANARY_EVENT])
            sub.pending = None
            del self._waiting[payload.line()]
        if not arrived.is_set():
            return {"ok": False, "error": f"probe not delivered within {deadline:g}s"}
        return {"ok": True, "seconds": round(time.perf_counter() - started, 6)}


class ReadySource(Protocol):
    """What the checks read of the server (:class:`~livenotify.server.Server`)."""

    @property
    def storage(self) -> StorageBridge | None: ...
    @property
    def mail(self) -> MailService | None: ...
    @property
    def canary(self) -> Canary: ...
    @property
    def hub(self) -> Hub: ...


async def _storage(app: ReadySource, deadline: float) -> dict[str, Any]:
    storage = app.storage
    if storage is None:
        return {"ok": False, "alive": False, "error": "storage is not running"}
    counts = storage.stats()
    part: dict[str, Any] = {
        "alive": storage.writer_pid is not None,
        "backlog": counts["pending"],
        "restarts": counts["restarts"],
    }
    answered = False
    with trio.move_on_after(deadline):
        try:
            await storage.query("subscriptions", PROBE_EMAIL)
            answered = True
        except StorageBusy as exc:
            part["error"] = str(exc)
    if not answered:
        part.setdefault("error", f"the writer did not answer within {deadline:g}s")
    elif storage.full:
        part["error"] = "the write backlog is full"
    part["ok"] = answered and not storage.full
    return dict(sorted(part.items()))


def _mail(app: ReadySource) -> dict[str, Any]:
    # Whether the broker took the last hand-off decides; the mail workers
    # seen consuming are shown but do not: without one, mail waits in the
    # broker while live delivery (what a load balancer routes for) is fine.
    if app.mail is None:
        return {"ok": True, "broker": "not running"}
    dispatcher = app.mail.dispatcher
    up = not dispatcher.broker_down
    return {
        "ok": up,
        "broker": "up" if up else "down",
        "queued": dispatcher.queued,
        "workers": app.mail.presence.workers,
    }


async def check(app: ReadySource, deadline: float = DEADLINE) -> tuple[bool, dict[str, Any]]:
    """Every part's state now; True when all are ok."""
    parts: dict[str, Any] = {}

    async def storage() -> None:
        parts["storage"] = await _storage(app, deadline)

    async def canary() -> None:
        parts["canary"] = await app.canary.probe(deadline)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(storage)
        nursery.start_soon(canary)
    parts["mail"] = _mail(app)
    parts["backplane"] = app.hub.backplane.ready()
    ok = all(part["ok"] for part in parts.values())
    ordered = {k: parts[k] for k in ("storage", "mail", "backplane", "canary")}
    return ok, ordered
