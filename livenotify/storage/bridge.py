"""``StorageBridge``: the Trio side of the SQLite writer process.

Writes never block and never wait for the disk. Each gets the next sequence
number and goes into the :class:`~livenotify.storage.backlog.Backlog`; a
feeder task sends runs of them to the writer process (:mod:`storage_proc`)
over a socket pair, keeping at most ``in_flight_limit`` sent and not yet
acknowledged. The writer commits in batches and acknowledges the last
sequence number of each commit; only then does the bridge drop those writes.
A caller that must not claim success before the disk has it (``registered``,
``subscribed``) awaits :meth:`StorageBridge.committed`, bounded by
``Config.storage_timeout``.

If the writer dies, the supervisor logs it, starts a new one after a
backoff, and replays every un-acknowledged write (writes are idempotent).
When the backlog is full, writes raise :class:`StorageBusy` and store
nothing; nothing already accepted is ever dropped.

**Reads** go over the same socket to the writer (``wire.Query``), which
commits its open batch and answers: the server process opens no SQLite
connection, so a database file that vanishes, turns read-only or is
overwritten costs reads and writes (``storage_busy``), never the server (a
reader mapping SQLite's ``-shm`` would take it down with SIGBUS).
:meth:`StorageBridge.subscriptions_of` also applies the connection's own
not yet acknowledged subscribe/unsubscribe writes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import trio

from storage_proc.database import DatabaseLock
from storage_proc.ops import (
    ConfirmWrite,
    LogNotification,
    MarkQueued,
    PositionWrite,
    RegisterWrite,
    SetConfirmation,
    SubscribeWrite,
    UnsubscribeWrite,
    Write,
)

from ..config import Config
from .backlog import Backlog
from .errors import StorageBusy
from .limits import BACKLOG_LIMIT, BATCH_MS, BATCH_SIZE, IN_FLIGHT_LIMIT
from .process import WriterProcess
from .reads import Reads
from .supervision import Supervision
from .writes import Clock, MailJob, check_events, check_text

log = logging.getLogger("livenotify.storage")


class StorageBridge(Supervision):
    """Trio side of the writer process: non-blocking writes, reads through it.

    ``await nursery.start(bridge.run)`` validates the database and starts the
    writer; ``await bridge.aclose()`` flushes and stops it. Constructor
    keywords override the module's limits (tests and the benchmark use them).
    """

    def __init__(
        self,
        config: Config,
        *,
        batch_size: int = BATCH_SIZE,
        batch_ms: float = BATCH_MS,
        in_flight_limit: int = IN_FLIGHT_LIMIT,
        backlog_limit: int = BACKLOG_LIMIT,
    ) -> None:
        self.path = config.db
        self.config = config
        self._batch_size = batch_size
        self._batch_ms = batch_ms
        self._in_flight_limit = in_flight_limit
        self._timeout = config.storage_timeout
        # One id per bridge: the writer's stored progress is only trusted
        # for sequence numbers of this run.
        self._run_id = uuid.uuid4().hex
        self._clock = Clock()
        self._backlog = Backlog(backlog_limit)
        self._reads = Reads(lambda: self._wake.set())
        self._wake = trio.Event()  # the feeder has something to do
        self._acked_event = trio.Event()  # some writes were acknowledged
        self._outbox_event = trio.Event()
        self._outbox_gen = 0  # bumps when commits add outbox rows
        self._outbox_seen = 0  # _outbox_gen when pending_mail() last looked
        self._writer: WriterProcess | None = None
        self._lock: DatabaseLock | None = None
        self._ran = False
        self._ran_writer = False  # a writer was started: skip quick_check on restarts
        self._running = False
        self._closed = False  # no more writes accepted
        self._stopping = False  # flushed; tell the writer to close
        self._stopped = trio.Event()
        self._busy_logged = False
        self._counters = {"restarts": 0, "busy": 0, "commits": 0, "outbox_rows": 0}
        #: The notification log's state at start-up (epoch, head, floor,
        #: kept, started), from the first writer's Ready.
        self.log_state: dict[str, object] = {}
        #: Accepted writes that were never acknowledged when storage stopped.
        self.lost = 0

    # -- writes --------------------------------------------------------------

    def register(self, email: str, *, confirmed: bool = True) -> int:
        """Record ``email`` as a subscriber (first/last seen); its sequence
        number. ``confirmed=False`` (double opt-in) keeps a new address from
        getting mail until :meth:`confirm`; it never un-confirms one."""
        email = check_text("email", email)
        return self._push(RegisterWrite(email, self._clock.now(), bool(confirmed)))

    def set_confirmation(self, email: str, code: str, expires: str) -> int:
        """Record the confirmation code mailed to ``email`` (valid until ``expires``)."""
        write = SetConfirmation(
            check_text("email", email), check_text("code", code),
            check_text("expires", expires), self._clock.now(),
        )  # fmt: skip
        return self._push(write)

    def confirm(self, email: str, code: str) -> int:
        """Mark ``email`` confirmed, if ``code`` is still its pending code."""
        return self._push(ConfirmWrite(check_text("email", email), check_text("code", code)))

    async def subscriber(
        self, email: str
    ) -> tuple[bool, str | None, str | None, str | None] | None:
        """``(confirmed, code, code_expires, code_sent)`` of a stored address,
        or None for one never registered."""
        row = await self.query("subscriber", check_text("email", email))
        if row is None:
            return None
        assert isinstance(row, list)
        confirmed, code, expires, sent = row
        return bool(confirmed), code, expires, sent

    async def confirmation(self, code: str) -> tuple[str, str] | None:
        """``(email, expires)`` of the address waiting for ``code``, if any."""
        row = await self.query("confirmation", check_text("code", code))
        if row is None:
            return None
        assert isinstance(row, list)
        return str(row[0]), str(row[1])

    def subscribe(self, email: str, events: Sequence[str]) -> int:
        """Persist ``email``'s subscription to ``events``."""
        email = check_text("email", email)
        return self._push(SubscribeWrite(email, check_events(events), self._clock.now()))

    def unsubscribe(self, email: str, events: Sequence[str]) -> int:
        """Remove ``events`` from ``email``'s stored subscriptions."""
        return self._push(UnsubscribeWrite(check_text("email", email), check_events(events)))

    def log_notification(
        self,
        notification_id: str,
        event: str,
        payload: str,
        *,
        offset: int | None = None,
        epoch: str | None = None,
        at: str | None = None,
    ) -> int:
        """Log a notification (at its log position, if given); the writer
        adds, in the same transaction, one pending outbox row per registered
        subscriber of ``event`` or ``*``."""
        write = LogNotification(
            check_text("notification_id", notification_id),
            check_text("event", event),
            check_text("payload", payload),
            at or self._clock.now(),
            offset,
            epoch,
        )
        return self._push(write)

    def save_position(self, email: str, epoch: str, offset: int) -> int:
        """Where ``email``'s connection ended in the log (``query("position")``)."""
        return self._push(PositionWrite(check_text("email", email), epoch, int(offset)))

    def mark_mail_queued(self, outbox_ids: Sequence[int]) -> int:
        """Outbox rows handed to Celery: they leave :meth:`pending_mail` at once."""
        ids = tuple(int(i) for i in outbox_ids)
        return self._push(MarkQueued(ids, self._clock.now()))

    def now(self) -> str:
        """The time stamp the next write would carry."""
        return self._clock.now()

    @property
    def full(self) -> bool:
        """True when the next write would raise StorageBusy."""
        return self._closed or self._backlog.full

    def _push(self, write: Write) -> int:
        if self._closed:
            raise StorageBusy("storage is closed")
        try:
            seq = self._backlog.push(write)
        except StorageBusy:
            self._counters["busy"] += 1
            if not self._busy_logged:
                self._busy_logged = True
                log.warning(
                    "storage backlog full (%d unacknowledged writes): refusing writes",
                    len(self._backlog),
                )
            raise
        self._wake.set()
        return seq

    async def committed(self, seq: int) -> None:
        """Return once write ``seq`` is committed; StorageBusy if that takes
        longer than ``Config.storage_timeout`` (the write stays accepted)."""
        with trio.move_on_after(self._timeout):
            while self._backlog.acked < seq:
                await self._acked_event.wait()
            return
        self._counters["busy"] += 1
        raise StorageBusy(f"storage did not commit within {self._timeout:g}s")

    def _acknowledge(self, seq: int, outbox_rows: int | None) -> None:
        """Drop writes up to ``seq``; ``outbox_rows`` None means unknown."""
        if seq <= self._backlog.acked:
            return
        logged = self._backlog.acknowledge(seq)
        if outbox_rows is None and logged:
            outbox_rows = 1  # committed before a crash lost the ack: look again
        if outbox_rows:
            self._counters["outbox_rows"] += outbox_rows
            self._outbox_gen += 1
            self._outbox_event.set()
            self._outbox_event = trio.Event()
        self._acked_event.set()
        self._acked_event = trio.Event()
        self._wake.set()
        if self._busy_logged and not self._backlog.full:
            self._busy_logged = False
            log.info("storage backlog has room again (%d unacknowledged)", len(self._backlog))

    # -- reads ---------------------------------------------------------------

    async def query(self, name: str, *args: object) -> object:
        """Run a read (a name in ``storage_proc.queries.QUERIES``) in the
        writer; StorageBusy if it is down, fails the read, or takes longer
        than ``Config.storage_timeout``."""
        if not self._running or self._stopping:
            raise StorageBusy("storage is not running")
        try:
            answer = await self._reads.ask(name, args, self._timeout)
        except StorageBusy:
            self._counters["busy"] += 1
            raise
        if not answer.ok:
            log.error("storage read failed: %s", answer.value)
            raise StorageBusy(f"storage read failed: {answer.value}")
        return answer.value

    async def subscriptions_of(self, email: str) -> list[str]:
        """``email``'s stored subscriptions, sorted, including its own
        accepted but not yet acknowledged (un)subscribe writes."""
        check_text("email", email)
        # Taken before the read: the writer applies every write sent before
        # the query, and the rest is in ``pending`` (re-applying one the
        # store reflects changes nothing).
        pending = self._backlog.pending_subscriptions(email)
        stored = await self.query("subscriptions", email)
        assert isinstance(stored, list)
        return self._backlog.apply_subscriptions(stored, pending)

    async def position_of(self, email: str) -> tuple[str, int] | None:
        """(epoch, offset) where ``email``'s last connection ended, including
        a position write not yet acknowledged; None when never saved."""
        pending = self._backlog.pending_position(check_text("email", email))
        if pending is not None:
            return pending.epoch, pending.offset
        answer = await self.query("position", email)
        if answer is None:
            return None
        assert isinstance(answer, list | tuple)
        return str(answer[0]), int(answer[1])

    async def pending_mail(self, limit: int) -> list[MailJob]:
        """Up to ``limit`` pending outbox rows, oldest first, without those
        already passed to :meth:`mark_mail_queued`."""
        self._outbox_seen = self._outbox_gen
        skip = set(self._backlog.pending_queued)
        jobs: list[MailJob] = []
        after = 0
        # Pages of ``limit`` by outbox_id (keyset): memory stays bounded
        # however many rows are marked queued but not yet committed so.
        while len(jobs) < limit:
            rows = await self.query("pending_mail", limit, after)
            assert isinstance(rows, list)
            jobs.extend(MailJob(*row) for row in rows if row[0] not in skip)
            if len(rows) < limit:
                break
            after = rows[-1][0]
        return jobs[:limit]

    async def wait_outbox(self) -> None:
        """Return once a commit added outbox rows after the latest
        :meth:`pending_mail` call began (meant for one consumer, the mail
        dispatcher: ``pending_mail`` / ``wait_outbox`` in a loop misses none)."""
        while self._outbox_gen <= self._outbox_seen:
            await self._outbox_event.wait()

    # -- flushing and closing ------------------------------------------------

    async def flush(self) -> None:
        """Return once every write accepted so far is acknowledged (committed)."""
        target = self._backlog.seq
        while self._backlog.acked < target:
            await self._acked_event.wait()

    async def aclose(self) -> None:
        """Refuse new writes, flush every accepted one, stop the writer (it
        marks the log cleanly closed), and return once it has exited. Bound
        it with a timeout: a writer that cannot start again can never flush."""
        self._closed = True
        if not self._running:
            return
        await self.flush()
        self._stopping = True
        self._wake.set()
        await self._stopped.wait()

    def stats(self) -> dict[str, int]:
        """Counters: pending (un-acknowledged), in_flight, acked, restarts,
        busy (writes and reads refused), commits, outbox_rows."""
        backlog = self._backlog
        return {
            "pending": len(backlog),
            "in_flight": backlog.sent - backlog.acked,
            "acked": backlog.acked,
            **self._counters,
        }

    @property
    def writer_pid(self) -> int | None:
        """The current writer process's pid (None between incarnations)."""
        return self._writer.pid if self._writer is not None else None
