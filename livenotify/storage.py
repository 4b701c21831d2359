"""``StorageBridge``: the Trio side of the SQLite writer process.

Writes never block and never wait for the disk. Each gets the next sequence
number and goes into the bridge's *un-acknowledged backlog*; a feeder task
sends runs of them to the writer process (:mod:`storage_proc`) over a
socket pair, keeping at most ``in_flight_limit`` sent and not yet
acknowledged — that window is the bounded queue toward the writer. The
writer commits in batches and acknowledges the last sequence number of each
commit; only then does the bridge drop those writes.

If the writer dies (a crash, ``kill -9``, a failed write), the supervisor
logs it, starts a new one after a backoff, and replays every
un-acknowledged write. Writes are idempotent, and the writer also records
the last sequence number it committed, so a replay neither loses nor
doubles anything. Live delivery goes on meanwhile: writes keep landing in
the backlog.

**When the backlog is full** (``backlog_limit`` un-acknowledged writes: the
writer is down, stuck or far behind), write methods raise
:class:`StorageBusy` and store nothing; the session answers the client
``storage_busy``. Writes are accepted again as soon as acknowledgements
make room. Nothing already accepted is ever dropped.

Reads run on a small pool of read-only connections in worker threads, so
they never block the Trio thread. In WAL mode they see every committed (so
every acknowledged) write; :meth:`StorageBridge.subscriptions_of` also
applies the connection's own not yet acknowledged subscribe/unsubscribe
writes, so a client that reconnects at once still gets back what it just
subscribed to.

Exceptions::

    Exception
    ├── StorageError   the database cannot be used (raised by run() before
    │                  started(): corrupt, locked, unwritable, newer schema)
    └── StorageBusy    a write or read the store cannot take right now
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import signal
import socket
import sqlite3
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import trio

from storage_proc import wire
from storage_proc.database import (
    DatabaseLock,
    StorageFault,
    lock_path,
    open_reader,
    read_pending_mail,
    read_subscriptions,
)
from storage_proc.ops import (
    LogNotification,
    MarkQueued,
    Register,
    Subscribe,
    Unsubscribe,
    Write,
    pack,
)
from storage_proc.writer import WriterOptions, writer_main

from .config import Config

log = logging.getLogger(__name__)

#: Writes per transaction at most. One commit (one fsync with
#: ``synchronous=FULL``) per 2,000 writes keeps the disk far from being the
#: bottleneck while a batch stays a few hundred kilobytes of WAL.
BATCH_SIZE: Final = 2000
#: A batch commits at the latest this long after its first write: the bound
#: on how long an acknowledged-to-be write waits under light load.
BATCH_MS: Final = 20.0
#: Writes sent to the writer and not yet acknowledged (the bounded queue
#: toward the process). Four full batches: the writer never waits for us,
#: and a dead writer leaves at most this many to replay from the socket.
IN_FLIGHT_LIMIT: Final = 4 * BATCH_SIZE
#: Un-acknowledged writes the bridge keeps before refusing more with
#: StorageBusy: five seconds at 20,000 writes/s, enough to ride out the
#: longest restart backoff; at ~300 bytes a write, ~30 MB at worst.
BACKLOG_LIMIT: Final = 100_000
#: Writes per frame, and a rough byte bound (notification payloads may be
#: 64 KiB each): keeps each frame and its pickle small.
CHUNK_WRITES: Final = 512
CHUNK_BYTES: Final = 1 << 20
#: Restart backoff: first retry after 0.1 s, doubling to 5 s. A writer that
#: ran for STABLE_AFTER seconds resets it; a crash loop settles at 5 s.
BACKOFF_INITIAL: Final = 0.1
BACKOFF_MAX: Final = 5.0
STABLE_AFTER: Final = 10.0
#: A writer that has not said Ready by then is hung: a cold interpreter on
#: a loaded machine takes about a second, a big quick_check a few more.
START_TIMEOUT: Final = 60.0
#: How long a writer gets to exit after its socket closed, before SIGKILL.
EXIT_TIMEOUT: Final = 5.0
#: Read-only connections (and threads) for reads: register is the busy
#: read path; two match the two cores this is sized for.
READERS: Final = 2

_SPAWN = multiprocessing.get_context("spawn")
_T = TypeVar("_T")


class StorageError(Exception):
    """The database cannot be used; ``str()`` is one line for the operator."""


class StorageBusy(Exception):
    """The store cannot take this write (or answer this read) right now."""


@dataclass(frozen=True, slots=True)
class MailJob:
    """One pending e-mail: a notification for one registered subscriber."""

    outbox_id: int
    notification_id: str
    email: str
    event: str
    #: The notification's JSON text, as it was published.
    payload: str


def _check_text(name: str, value: object) -> str:
    # Fail at the call site: a bad value reaching the writer would crash it
    # on every replay.
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value


def _check_events(events: Sequence[str]) -> tuple[str, ...]:
    if isinstance(events, str):
        raise TypeError("events must be a sequence of str, not a str")
    checked = tuple(events)
    for event in checked:
        if type(event) is not str:
            _check_text("event", event)
    return checked


class _Clock:
    """ISO 8601 UTC with milliseconds, formatted once per millisecond."""

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""

    def now(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            seconds, millis = divmod(ms, 1000)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            self._ms, self._text = ms, f"{stamp}.{millis:03d}Z"
        return self._text


class _Writer:
    """One incarnation of the writer process and our end of its socket."""

    def __init__(self, process: multiprocessing.process.BaseProcess, sock: socket.socket) -> None:
        self.process = process
        self.pid = process.pid or 0
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.frames = wire.FrameBuffer()
        self.started_at = time.monotonic()
        self.reaped = False
        self.exitcode: int | None = None

    async def receive(self) -> object | None:
        """The next message from the writer; None once its end is closed."""
        while True:
            message = self.frames.next()
            if message is not None:
                return message
            try:
                data = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self.frames.feed(data)

    def exit_text(self) -> str:
        code = self.exitcode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"


class StorageBridge:
    """Trio side of the writer process: non-blocking writes, threaded reads.

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
        self._batch_size = batch_size
        self._batch_ms = batch_ms
        self._in_flight_limit = in_flight_limit
        self._backlog_limit = backlog_limit
        # One epoch per bridge: the writer's stored progress is only
        # trusted for sequence numbers of this run.
        self._epoch = uuid.uuid4().hex
        self._clock = _Clock()
        # Sequence numbers: every write up to _acked is committed, up to
        # _sent is with the current writer, up to _seq is accepted.
        self._seq = 0
        self._sent = 0
        self._acked = 0
        self._unacked: dict[int, Write] = {}
        # Un-acknowledged subscription writes by e-mail, in order (for
        # read-your-writes in subscriptions_of) and outbox ids being marked.
        self._pending_subs: dict[str, deque[Subscribe | Unsubscribe]] = {}
        self._pending_queued: Counter[int] = Counter()
        self._wake = trio.Event()  # the feeder has something to do
        self._acked_event = trio.Event()  # some writes were acknowledged
        self._outbox_event = trio.Event()
        self._outbox_gen = 0  # bumps when commits add outbox rows
        self._outbox_seen = 0  # _outbox_gen when pending_mail() last looked
        self._writer: _Writer | None = None
        self._lock: DatabaseLock | None = None
        self._readers: list[sqlite3.Connection] = []
        self._read_slots = trio.Semaphore(READERS)
        self._ran = False
        self._ran_writer = False  # a writer was started: skip quick_check on restarts
        self._running = False
        self._closed = False  # no more writes accepted
        self._stopping = False  # flushed; tell the writer to close
        self._stopped = trio.Event()
        self._busy_logged = False
        self._counters = {"restarts": 0, "busy": 0, "commits": 0, "outbox_rows": 0}

    # -- writes --------------------------------------------------------------

    def register(self, email: str) -> int:
        """Record ``email`` as a subscriber (first/last seen); its sequence number."""
        return self._push(Register(_check_text("email", email), self._clock.now()))

    def subscribe(self, email: str, events: Sequence[str]) -> int:
        """Persist ``email``'s subscription to ``events``."""
        write = Subscribe(_check_text("email", email), _check_events(events), self._clock.now())
        return self._push_subscription(write)

    def unsubscribe(self, email: str, events: Sequence[str]) -> int:
        """Remove ``events`` from ``email``'s stored subscriptions."""
        write = Unsubscribe(_check_text("email", email), _check_events(events))
        return self._push_subscription(write)

    def log_notification(self, notification_id: str, event: str, payload: str) -> int:
        """Log a notification; the writer adds, in the same transaction, one
        pending outbox row per registered subscriber of ``event`` or ``*``."""
        write = LogNotification(
            _check_text("notification_id", notification_id),
            _check_text("event", event),
            _check_text("payload", payload),
            self._clock.now(),
        )
        return self._push(write)

    def mark_mail_queued(self, outbox_ids: Sequence[int]) -> int:
        """Outbox rows handed to Celery: they leave :meth:`pending_mail` at once."""
        ids = tuple(int(i) for i in outbox_ids)
        seq = self._push(MarkQueued(ids, self._clock.now()))
        self._pending_queued.update(ids)
        return seq

    def _push_subscription(self, write: Subscribe | Unsubscribe) -> int:
        seq = self._push(write)
        pending = self._pending_subs.get(write.email)
        if pending is None:
            pending = self._pending_subs[write.email] = deque()
        pending.append(write)
        return seq

    def _push(self, write: Write) -> int:
        if self._closed:
            raise StorageBusy("storage is closed")
        if len(self._unacked) >= self._backlog_limit:
            self._counters["busy"] += 1
            if not self._busy_logged:
                self._busy_logged = True
                log.warning(
                    "storage backlog full (%d unacknowledged writes): refusing writes",
                    len(self._unacked),
                )
            raise StorageBusy(f"storage backlog full ({len(self._unacked)} unacknowledged writes)")
        self._seq += 1
        self._unacked[self._seq] = write
        self._wake.set()
        return self._seq

    def _acknowledge(self, seq: int, outbox_rows: int | None) -> None:
        """Drop writes up to ``seq``; ``outbox_rows`` None means unknown."""
        seq = min(seq, self._seq)
        if seq <= self._acked:
            return
        logged = False
        unacked, pending_subs = self._unacked, self._pending_subs
        for s in range(self._acked + 1, seq + 1):
            write = unacked.pop(s)
            kind = type(write)
            if kind is Subscribe or kind is Unsubscribe:
                queue = pending_subs[write.email]  # type: ignore[union-attr]
                queue.popleft()
                if not queue:
                    del pending_subs[write.email]  # type: ignore[union-attr]
            elif isinstance(write, MarkQueued):
                self._pending_queued.subtract(write.outbox_ids)
                for outbox_id in write.outbox_ids:
                    if self._pending_queued[outbox_id] <= 0:
                        del self._pending_queued[outbox_id]
            elif isinstance(write, LogNotification):
                logged = True
        self._acked = seq
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
        if self._busy_logged and len(self._unacked) < self._backlog_limit:
            self._busy_logged = False
            log.info("storage backlog has room again (%d unacknowledged)", len(self._unacked))

    # -- reads ---------------------------------------------------------------

    async def subscriptions_of(self, email: str) -> list[str]:
        """``email``'s stored subscriptions, sorted, including its own
        accepted but not yet acknowledged (un)subscribe writes."""
        _check_text("email", email)
        # Taken before the read: every write not in it is acknowledged, so
        # committed, so in the snapshot the read below takes.
        pending = list(self._pending_subs.get(email, ()))
        events = await self._read(read_subscriptions, email)
        for write in pending:
            if isinstance(write, Subscribe):
                events.update(write.events)
            else:
                events.difference_update(write.events)
        return sorted(events)

    async def pending_mail(self, limit: int) -> list[MailJob]:
        """Up to ``limit`` pending outbox rows, oldest first, without those
        already passed to :meth:`mark_mail_queued`."""
        self._outbox_seen = self._outbox_gen
        skip = set(self._pending_queued)
        jobs: list[MailJob] = []
        after = 0
        # Pages of ``limit`` by outbox_id (keyset): memory stays bounded
        # however many rows are marked queued but not yet committed so.
        while len(jobs) < limit:
            rows = await self._read(read_pending_mail, limit, after)
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

    async def _read(self, query: Callable[..., _T], *args: object) -> _T:
        async with self._read_slots:
            if not self._readers:
                raise StorageBusy("storage is not running")
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(query, conn, *args)
            except sqlite3.Error as exc:
                log.error("storage read failed: %s", exc)
                raise StorageBusy(f"storage read failed: {exc}") from None
            finally:
                self._readers.append(conn)

    # -- flushing and closing ------------------------------------------------

    async def flush(self) -> None:
        """Return once every write accepted so far is acknowledged (committed)."""
        target = self._seq
        while self._acked < target:
            await self._acked_event.wait()

    async def aclose(self) -> None:
        """Refuse new writes, flush every accepted one, stop the writer, and
        return once it has exited. Bound it with a timeout: a writer that
        cannot start again can never flush."""
        self._closed = True
        if not self._running:
            return
        await self.flush()
        # Readers first: the writer, closing last, then checkpoints the WAL
        # into the database file and removes it.
        await self._close_readers()
        self._stopping = True
        self._wake.set()
        await self._stopped.wait()

    def stats(self) -> dict[str, int]:
        """Counters: pending (un-acknowledged), in_flight, acked, restarts,
        busy (writes refused), commits, outbox_rows."""
        return {
            "pending": len(self._unacked),
            "in_flight": self._sent - self._acked,
            "acked": self._acked,
            **self._counters,
        }

    @property
    def writer_pid(self) -> int | None:
        """The current writer process's pid (None between incarnations)."""
        return self._writer.pid if self._writer is not None else None

    # -- supervision ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Validate the database, start and supervise the writer process;
        ``started()`` once it is ready. Raises :class:`StorageError` (one
        clear line) for a corrupt, locked or unwritable file. Returns after
        :meth:`aclose`; if cancelled instead, closes the writer's socket (it
        commits what it has and exits) and logs what was not acknowledged."""
        if self._ran:
            raise RuntimeError("StorageBridge.run() can only be called once")
        self._ran = True
        try:
            try:
                self._lock = await trio.to_thread.run_sync(DatabaseLock, self.path)
            except StorageFault as exc:
                raise StorageError(str(exc)) from None
            writer = await self._start_writer()
            try:
                for _ in range(READERS):
                    self._readers.append(await trio.to_thread.run_sync(open_reader, self.path))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read database {self.path}: {exc}") from None
            self._running = True
            task_status.started()
            await self._supervise(writer)
        finally:
            with trio.CancelScope(shield=True):
                await self._cleanup()

    async def _start_writer(self) -> _Writer:
        ours, theirs = socket.socketpair()
        options = WriterOptions(
            self.path, self._epoch, self._batch_size, self._batch_ms, check=not self._ran_writer
        )
        self._ran_writer = True
        process = _SPAWN.Process(
            target=writer_main,
            args=(theirs, options),
            name="livenotify-storage-writer",
            daemon=True,
        )
        try:
            await trio.to_thread.run_sync(process.start)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its own copy now
        writer = self._writer = _Writer(process, ours)
        try:
            with trio.fail_after(START_TIMEOUT):
                first = await writer.receive()
        except trio.TooSlowError:
            first = wire.Fatal(f"storage writer did not start within {START_TIMEOUT:.0f}s")
        if not isinstance(first, wire.Ready):
            await self._reap(writer)
            self._writer = None
            if isinstance(first, wire.Fatal):
                raise StorageError(first.message)
            raise StorageError(f"storage writer exited during start-up ({writer.exit_text()})")
        log.info("storage writer started pid=%d db=%s", writer.pid, self.path)
        if first.schema_before == 0:
            log.info("storage schema created (version %d)", first.schema_after)
        elif first.schema_before != first.schema_after:
            log.info(
                "storage schema upgraded from version %d to %d",
                first.schema_before,
                first.schema_after,
            )
        # What the previous writer committed without being able to ack it.
        self._acknowledge(first.committed_seq, None)
        self._sent = self._acked
        return writer

    async def _supervise(self, writer: _Writer) -> None:
        failures = 0
        while True:
            await self._serve(writer)
            if self._stopping and not self._unacked:
                log.info(
                    "storage closed: %d writes committed, %d writer restarts",
                    self._acked,
                    self._counters["restarts"],
                )
                return
            if time.monotonic() - writer.started_at >= STABLE_AFTER:
                failures = 0
            delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2**failures)
            failures += 1
            log.log(
                logging.WARNING if self._closed else logging.ERROR,
                "storage writer pid=%d died (%s); restarting in %.1fs, %d writes to replay",
                writer.pid,
                writer.exit_text(),
                delay,
                len(self._unacked),
            )
            self._counters["restarts"] += 1
            while True:
                await trio.sleep(delay)
                try:
                    writer = await self._start_writer()
                    break
                except StorageError as exc:
                    delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2**failures)
                    failures += 1
                    log.error("storage writer failed to start: %s; retrying in %.1fs", exc, delay)

    async def _serve(self, writer: _Writer) -> None:
        """Feed and hear one writer until its end of the socket closes."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._feed, writer)
            await self._receive(writer)
            nursery.cancel_scope.cancel()
        await self._reap(writer)
        self._writer = None

    async def _receive(self, writer: _Writer) -> None:
        while True:
            message = await writer.receive()
            if message is None:
                return
            if isinstance(message, wire.Ack):
                self._counters["commits"] += 1
                self._acknowledge(message.seq, message.outbox_rows)
            elif isinstance(message, wire.Failed):
                log.error("storage writer pid=%d: a write failed: %s", writer.pid, message.message)
            elif not isinstance(message, wire.Closed):
                log.error("storage writer pid=%d sent %r", writer.pid, message)

    async def _feed(self, writer: _Writer) -> None:
        close_sent = False
        try:
            while True:
                room = self._in_flight_limit - (self._sent - self._acked)
                if self._sent < self._seq and room > 0:
                    first = self._sent + 1
                    stop = min(self._seq, self._sent + min(room, CHUNK_WRITES))
                    rows: list[tuple[object, ...]] = []
                    size = 0
                    for s in range(first, stop + 1):
                        write = self._unacked[s]
                        rows.append(pack(write))
                        if type(write) is LogNotification:
                            size += len(write.payload)
                            if size >= CHUNK_BYTES:
                                break
                    self._sent = first + len(rows) - 1
                    await writer.stream.send_all(wire.encode(wire.Writes(first, rows)))
                elif self._stopping and not close_sent and self._sent == self._seq:
                    close_sent = True
                    await writer.stream.send_all(wire.encode(wire.Close()))
                else:
                    self._wake = trio.Event()
                    await self._wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the writer is gone; _receive sees the end and we restart

    async def _reap(self, writer: _Writer) -> None:
        """Wait for the process to exit (killing it if it lingers) and close."""
        if writer.reaped:
            return
        writer.reaped = True
        await writer.stream.aclose()  # a live writer reads EOF: commits, exits
        process = writer.process
        with trio.move_on_after(EXIT_TIMEOUT) as waited:
            # Readable once the process has exited (the sentinel pipe closes).
            await trio.lowlevel.wait_readable(process.sentinel)
        if waited.cancelled_caught:
            log.warning("storage writer pid=%d did not exit; killing it", writer.pid)
            process.kill()
        await trio.to_thread.run_sync(process.join)
        writer.exitcode = process.exitcode
        process.close()

    async def _cleanup(self) -> None:
        self._running = False
        self._closed = True
        await self._close_readers()
        if self._writer is not None:
            await self._reap(self._writer)
            self._writer = None
        if self._unacked:
            log.warning(
                "storage stopped with %d writes not acknowledged (sent ones may be committed)",
                len(self._unacked),
            )
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._stopped.set()

    async def _close_readers(self) -> None:
        for _ in range(READERS):
            await self._read_slots.acquire()  # no read is using a connection
        for conn in self._readers:
            conn.close()
        self._readers.clear()
        for _ in range(READERS):
            self._read_slots.release()


__all__ = [
    "BACKLOG_LIMIT",
    "BATCH_MS",
    "BATCH_SIZE",
    "IN_FLIGHT_LIMIT",
    "MailJob",
    "StorageBridge",
    "StorageBusy",
    "StorageError",
    "lock_path",
]
