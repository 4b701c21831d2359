"""``LocalBackplane``: one process; the log is embedded (or in memory).

``publish`` appends to the log synchronously (the offset is taken, the
write handed to storage) and calls ``deliver`` at once, before it returns,
without a checkpoint: no task hop between a publish and its fan-out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any

import trio

from .. import protocol
from ..history import NotificationLog, Position, Replay, Since
from ..payload import Payload
from .base import Deliver, Sent, encode_notification


class LocalBackplane:
    """A single process's backplane over ``log``; ``deliver`` may be given
    now (a bare hub) or by :meth:`run`."""

    def __init__(self, log: NotificationLog, deliver: Deliver | None = None) -> None:
        self.log = log
        self._deliver = deliver

    @property
    def position(self) -> Position:
        return self.log.position

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Nothing to read: publishes deliver themselves. Returns at once."""
        self._deliver = deliver
        task_status.started()

    async def publish(
        self, event: str, fields: Mapping[str, Any], *, exclude: object | None = None
    ) -> Sent:
        # No await: the coroutine runs to completion in one step.
        return self.publish_nowait(event, fields, exclude=exclude)

    def publish_nowait(
        self, event: str, fields: Mapping[str, Any], *, exclude: object | None = None
    ) -> Sent:
        """:meth:`publish` without a coroutine (sync callers, benchmarks)."""
        deliver = self._deliver
        if deliver is None:
            raise RuntimeError("LocalBackplane has no deliver: run() it first")
        notification_id = uuid.uuid4().hex
        ts = protocol.timestamp()

        def encode(position: Position) -> str:
            return encode_notification(event, fields, notification_id, ts, position)

        # HistoryBusy propagates: no offset was taken, nothing is delivered.
        entry = self.log.append(notification_id, event, encode)
        delivered = deliver(entry, Payload(entry.text), exclude)
        return Sent(notification_id, delivered, entry.offset, self.log.epoch)

    async def history(self, since: Since, events: Collection[str]) -> Replay:
        return await self.log.since(since, events)

    def ready(self) -> dict[str, object]:
        return {"ok": True, "kind": "local", "position": str(self.log.position)}
