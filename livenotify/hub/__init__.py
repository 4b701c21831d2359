"""The hub: event -> subscribers (:mod:`.registry`) and each subscriber's
write path (:mod:`.delivery`). It imports no transport."""

from .delivery import Coalescer, Outbox, Subscriber, Writer
from .registry import Hub, HubStats, PublishObserver

__all__ = ["Coalescer", "Hub", "HubStats", "Outbox", "PublishObserver", "Subscriber", "Writer"]
