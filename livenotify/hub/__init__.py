"""The hub: event -> subscribers (:mod:`.registry`), each subscriber's write
path (:mod:`.delivery`) and its bounded queue (:mod:`.outbox`). It imports
no transport."""

from .delivery import Coalescer, Subscriber, Writer
from .outbox import Outbox
from .registry import Hub, HubStats

__all__ = ["Coalescer", "Hub", "HubStats", "Outbox", "Subscriber", "Writer"]
