"""The backplane: how a publish gets its offset and reaches subscribers.

One process (:class:`~.local.LocalBackplane`, the default) or many sharing
a log (a Redis backplane). Whatever it is, the hub's publish path is:

1. :meth:`Backplane.publish` takes the next offset from the log, builds the
   notification with ``offset``/``epoch`` (:func:`encode_notification`,
   encoded once) and makes it durable enough for replay — or refuses it
   (:class:`~livenotify.history.HistoryBusy` -> ``busy``,
   :class:`BackendUnavailable` -> ``backend_unavailable``): a notification
   is never delivered with a hole in the history;
2. the backplane calls ``deliver(entry, payload, exclude)`` — given to
   :meth:`Backplane.run` — for every notification, in offset order, on every
   process. The local one calls it from ``publish`` itself, before it
   returns and without yielding (no task hop: fan-out stays as fast as a
   bare hub); a shared one calls it from its reader task.

:meth:`Backplane.history` answers a ``since`` (the session merges it with
the live deliveries it buffered meanwhile, by offset).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple, Protocol

import trio

from .. import protocol
from ..history import LogEntry, Position, Replay, Since
from ..payload import Payload

#: ``deliver(entry, payload, exclude)``: fan ``payload`` (the entry's text)
#: out to local subscribers except ``exclude`` (the seed form's sender, an
#: opaque token the backplane hands back unchanged); how many got it.
Deliver = Callable[[LogEntry, Payload, object | None], int]


class BackendUnavailable(Exception):
    """The shared log cannot be reached: the publish is refused
    (``backend_unavailable``)."""


class Sent(NamedTuple):
    """What a publish did."""

    #: The notification's ``id``.
    id: str
    #: Local subscribers it was queued for (the process that published it).
    delivered: int
    #: Its place in the log.
    offset: int
    epoch: str


class Backplane(Protocol):
    """What the hub needs of the log that orders and shares publishes."""

    @property
    def position(self) -> Position:
        """The head: the last offset given out (or seen), in the current epoch."""
        ...

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver every notification with ``deliver`` until cancelled;
        ``task_status.started()`` once publishes may be made."""
        ...

    async def publish(
        self, event: str, fields: Mapping[str, Any], *, exclude: object | None = None
    ) -> Sent:
        """Log and deliver one notification. Raises HistoryBusy or
        BackendUnavailable, and then delivers nothing."""
        ...

    async def history(self, since: Since, events: Collection[str]) -> Replay:
        """Notifications for ``events`` after ``since``, in offset order, and
        whether that is all of them (``recovered``). Raises StorageBusy or
        BackendUnavailable when history cannot be read now."""
        ...

    def ready(self) -> dict[str, object]:
        """The backplane's part of ``/ready``: at least ``{"ok": bool}``."""
        ...


def encode_notification(
    event: str, fields: Mapping[str, Any], notification_id: str, ts: str, position: Position
) -> str:
    """The notification's wire text: the fields, ``id``/``timestamp`` unless
    given, and ``offset``/``epoch`` (the only fields the server overwrites)."""
    obj = protocol.notification(event, fields, notification_id, ts)
    obj["offset"] = position.offset
    obj["epoch"] = position.epoch
    return protocol.encode(obj)
