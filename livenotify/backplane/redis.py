"""``RedisBackplane``: several processes share one notification log in Redis.

Three keys under ``<prefix>:`` — ``epoch`` (the log's continuity),
``offset`` (the last offset given out) and ``log`` (a Redis Stream whose
entry ids are ``<offset>-0``, trimmed to about ``history_size`` entries).

- A publish is ONE round-trip: :data:`PUBLISH_LUA` (``EVALSHA``) creates
  the epoch if it is missing, takes the next offset (``INCR``), finishes the
  notification's text with ``"offset"``/``"epoch"`` and ``XADD``\\s it. Redis
  runs a script atomically, so offsets have no gap and no duplicate, and
  the stream order is the offset order.
- Delivery happens only in :meth:`RedisBackplane.run`'s reader: ``XREAD
  BLOCK`` from the last id it delivered (in a worker thread), then
  ``deliver`` in offset order. Every process, the publisher's included,
  delivers from the stream: every subscriber everywhere sees the same
  notification at the same position.
- A Redis that comes back empty has no ``epoch`` key: the next script (or
  the reader) creates a new epoch and offsets restart at 1. Positions of the
  old epoch can then never be recovered (``recovered: false``).
- Redis unreachable: :meth:`~RedisBackplane.publish` raises
  :class:`~.base.BackendUnavailable` (nothing was accepted, or — when the
  connection broke after Redis ran the script — it was accepted and will be
  delivered: never accepted and lost); the reader retries with backoff and
  resumes from its last id.

redis-py is blocking: every call runs in ``trio.to_thread``. Redis must not
evict these keys (``maxmemory-policy noeviction``) and should persist
(AOF) for a restart to keep the epoch.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage_proc.history import stamp

from .. import protocol
from ..config import Config
from ..history import HistoryBusy, LogEntry, Position, Replay, Since
from ..history.log import matches
from ..payload import Payload
from ..storage import StorageBridge, StorageBusy
from .base import BackendUnavailable, Deliver, Sent

log = logging.getLogger(__name__)

#: Seconds to connect / to wait for a publish's answer.
CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 2.0
#: Milliseconds an XREAD blocks; the epoch is checked at least this often.
BLOCK_MS = 1000
#: Stream entries read (and delivered) per round.
READ_BATCH = 1000
#: Reconnection backoff of the reader, seconds.
RETRY_MIN = 0.05
RETRY_MAX = 2.0
#: A publish waits this long for the reader to deliver it locally (for its
#: ``delivered`` count and so the publisher's ``published`` follows the
#: notification, as with one process); after that it answers anyway.
DELIVERY_WAIT = 5.0
#: A ``since`` ahead of this process's reader (seen on a faster process)
#: waits this long for the reader to get there before it is not exact.
CATCH_UP_WAIT = 2.0

#: Lua preamble of both scripts (KEYS: epoch, offset, stream; ARGV[1]: a
#: fresh epoch): ``epoch`` is the current one, created with an empty log if
#: missing.
EPOCH_LUA = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[2], 0)
  redis.call('DEL', KEYS[3])
end
"""

#: KEYS: epoch, offset, stream. ARGV: fresh epoch, max length (0: none),
#: the notification's JSON text without its closing ``}``, event, id, time.
PUBLISH_LUA = (
    EPOCH_LUA
    + """local offset = redis.call('INCR', KEYS[2])
local text = ARGV[3] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
local fields = {offset .. '-0', 'event', ARGV[4], 'text', text, 'id', ARGV[5],
                'time', ARGV[6], 'epoch', epoch}
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], unpack(fields))
else
  redis.call('XADD', KEYS[3], unpack(fields))
end
return {epoch, offset}
"""
)

#: KEYS: epoch, offset, stream. ARGV: fresh epoch. The epoch (created if
#: missing) and the last offset given out.
ENSURE_LUA = EPOCH_LUA + "return {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}\n"


def fresh_epoch() -> str:
    """A new epoch token (8 hex digits, as the embedded log's)."""
    return uuid.uuid4().hex[:8]


def text_head(event: str, fields: Mapping[str, Any], notification_id: str, ts: str) -> str:
    """The notification's text without its closing ``}``: the script appends
    ``"offset"`` and ``"epoch"`` (as :func:`~.base.encode_notification` sets
    them, they are the only fields the server overwrites)."""
    obj = protocol.notification(event, fields, notification_id, ts)
    obj.pop("offset", None)
    obj.pop("epoch", None)
    return protocol.encode(obj)[:-1]


@dataclass
class _Pending:
    """A publish of this process waiting for the reader to deliver it."""

    exclude: object | None
    delivered: int = 0
    done: trio.Event = field(default_factory=trio.Event)


class RedisBackplane:
    """The backplane of one of several processes sharing ``config.backend``.

    ``storage`` (this process's) gets the notifications published here, so
    the mail outbox has one row per recipient in total, whatever the number
    of processes.
    """

    def __init__(self, config: Config, storage: StorageBridge | None = None) -> None:
        if not config.backend:
            raise ValueError("RedisBackplane needs config.backend")
        self._storage = storage
        self._maxlen = config.history_size
        self._ttl = config.history_ttl
        prefix = config.backend_prefix
        self.keys = [f"{prefix}:epoch", f"{prefix}:offset", f"{prefix}:log"]
        common: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "decode_responses": True,
            # A retried script could append the notification twice.
            "retry": Retry(NoBackoff(), 0),
        }
        self._client = redis.Redis.from_url(
            config.backend, socket_timeout=COMMAND_TIMEOUT, **common
        )
        # Its own connection: XREAD BLOCK holds it.
        self._reader = redis.Redis.from_url(
            config.backend, socket_timeout=COMMAND_TIMEOUT + BLOCK_MS / 1000, **common
        )
        self._publish_script = self._client.register_script(PUBLISH_LUA)
        self._ensure_script = self._reader.register_script(ENSURE_LUA)
        self._epoch = ""
        self._head = 0
        self._up = False
        self._deliver: Deliver | None = None
        self._pending: dict[str, _Pending] = {}
        #: Set (and replaced) whenever the reader delivered more.
        self._advanced = trio.Event()
        #: Epoch changes seen since start (a Redis that lost its data).
        self.epoch_changes = 0

    @property
    def position(self) -> Position:
        """The last offset this process delivered, in the epoch it reads."""
        return Position(self._epoch, self._head)

    def ready(self) -> dict[str, object]:
        return {"ok": self._up, "kind": "redis", "position": str(self.position)}

    # -- publishing ----------------------------------------------------------

    async def publish(
        self, event: str, fields: Mapping[str, Any], *, exclude: object | None = None
    ) -> Sent:
        storage = self._storage
        if storage is not None and storage.full:
            # Its mail rows could not be written: refuse before Redis has it.
            raise HistoryBusy("storage backlog full")
        notification_id = uuid.uuid4().hex
        now = time.time()
        head = text_head(event, fields, notification_id, protocol.timestamp())
        pending = _Pending(exclude)
        self._pending[notification_id] = pending
        try:
            epoch, offset = await trio.to_thread.run_sync(
                self._append, head, event, notification_id, now
            )
            if storage is not None:
                text = f'{head},"offset":{offset},"epoch":"{epoch}"}}'
                try:
                    storage.log_notification(notification_id, event, text, at=stamp(now))
                except StorageBusy as exc:
                    log.error("notification %s not queued for mail: %s", notification_id, exc)
            with trio.move_on_after(DELIVERY_WAIT):
                await pending.done.wait()
        finally:
            del self._pending[notification_id]
        return Sent(notification_id, pending.delivered, offset, epoch)

    def _append(self, head: str, event: str, notification_id: str, now: float) -> tuple[str, int]:
        args: list[str | int] = [
            fresh_epoch(),
            self._maxlen,
            head,
            event,
            notification_id,
            repr(now),
        ]
        try:
            epoch, offset = self._publish_script(keys=self.keys, args=args)
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from None
        return str(epoch), int(offset)

    # -- reading -------------------------------------------------------------

    async def run(
        self, deliver: Deliver, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read the stream and deliver it until cancelled. Starts once Redis
        answered (retrying meanwhile); new processes start at the head."""
        self._deliver = deliver
        delay = RETRY_MIN
        while True:
            try:
                self._epoch, self._head = await trio.to_thread.run_sync(
                    self._ensure, abandon_on_cancel=True
                )
                break
            except BackendUnavailable as exc:
                log.warning("backend not reachable yet (%s); retrying", exc)
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        self._up = True
        log.info("backend: reading the log at %s", self.position)
        task_status.started()
        await self._read_loop(deliver)

    async def _read_loop(self, deliver: Deliver) -> None:
        delay = RETRY_MIN
        while True:
            try:
                epoch, batch = await trio.to_thread.run_sync(
                    self._read, f"{self._head}-0", abandon_on_cancel=True
                )
            except BackendUnavailable as exc:
                if self._up:
                    self._up = False
                    log.warning("backend unreachable (%s); reconnecting", exc)
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            if not self._up:
                self._up = True
                log.info("backend reachable again; reading on from %s", self.position)
            if epoch != self._epoch:
                self.epoch_changes += 1
                log.warning(
                    "backend epoch changed %s -> %s (Redis lost its data): delivering the "
                    "new epoch from its start; clients resuming the old one get "
                    "recovered=false",
                    self._epoch, epoch,
                )  # fmt: skip
                self._epoch, self._head = epoch, 0
                continue
            self._deliver_batch(deliver, batch)
            if batch:
                self._advanced.set()
                self._advanced = trio.Event()

    def _deliver_batch(self, deliver: Deliver, batch: list[tuple[str, dict[str, str]]]) -> None:
        for entry_id, fields in batch:
            offset = int(entry_id.partition("-")[0])
            if fields.get("epoch") != self._epoch:
                return  # written after a data loss: the next read sees the epoch
            if offset <= self._head:
                continue
            self._head = offset
            entry = LogEntry(offset, fields["event"], fields["text"], float(fields["time"]))
            pending = self._pending.get(fields.get("id", ""))
            count = deliver(entry, Payload(entry.text), pending.exclude if pending else None)
            if pending is not None:
                pending.delivered = count
                pending.done.set()

    def _ensure(self) -> tuple[str, int]:
        try:
            epoch, offset = self._ensure_script(keys=self.keys, args=[fresh_epoch()])
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from None
        return str(epoch), int(offset)

    def _read(self, after: str) -> tuple[str, list[tuple[str, dict[str, str]]]]:
        """The epoch, and the entries after ``after`` (blocking up to BLOCK_MS)."""
        stream = self.keys[2]
        try:
            # One connection, one round-trip: the epoch is the one the
            # entries belong to (a restart in between breaks the connection).
            pipe = self._reader.pipeline(transaction=False)
            pipe.get(self.keys[0])
            pipe.xread({stream: after}, count=READ_BATCH, block=BLOCK_MS)
            epoch, answer = pipe.execute()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from None
        if epoch is None:
            # Empty Redis (restarted without its data): a new epoch.
            return self._ensure()[0], []
        entries: list[tuple[str, dict[str, str]]] = answer[0][1] if answer else []
        return str(epoch), entries

    # -- history ---------------------------------------------------------------

    async def history(self, since: Since, events: Collection[str]) -> Replay:
        """From the stream, up to what this process delivered (later entries
        reach the subscriber live). Exact only in the same epoch with the
        stream still reaching back to ``since + 1``."""
        pos = since.position
        if pos is not None and pos.epoch == self._epoch and pos.offset > self._head:
            # Seen on a process whose reader is ahead of ours: catch up.
            with trio.move_on_after(CATCH_UP_WAIT):
                while self._head < pos.offset and self._epoch == pos.epoch:
                    await self._advanced.wait()
        epoch, head = self._epoch, self._head
        if pos is not None:
            if pos.epoch != epoch or pos.offset > head:
                return Replay(False, [])
            if pos.offset == head:
                return Replay(True, [])
        start = "-" if pos is None else f"{pos.offset + 1}-0"
        if head == 0:
            return Replay(True, [])  # nothing given out in this epoch yet
        current, rows = await trio.to_thread.run_sync(self._range, start, f"{head}-0")
        if current != epoch:
            return Replay(False, [])
        entries = [
            LogEntry(int(i.partition("-")[0]), f["event"], f["text"], float(f["time"]))
            for i, f in rows
        ]
        if self._ttl > 0:
            cutoff = time.time() - self._ttl
            entries = [e for e in entries if e.time >= cutoff]
        first = entries[0].offset if entries else head + 1
        if pos is not None:
            if first != pos.offset + 1:
                return Replay(False, [])
            return Replay(True, [e for e in entries if matches(e.event, events)])
        at = since.time
        # "all"/a time: exact when nothing of this epoch was trimmed, or the
        # stream reaches back past that time.
        whole = first == 1
        if at is None:
            return Replay(whole, [e for e in entries if matches(e.event, events)])
        reaches = bool(entries) and entries[0].time < at
        chosen = [e for e in entries if e.time >= at and matches(e.event, events)]
        return Replay(whole or reaches, chosen)

    def _range(self, start: str, end: str) -> tuple[str | None, list[tuple[str, dict[str, str]]]]:
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.keys[0])
            pipe.xrange(self.keys[2], start, end)
            epoch, rows = pipe.execute()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from None
        return epoch, rows

    def close(self) -> None:
        """Drop the connections."""
        self._client.close()
        self._reader.close()
