"""The writer process's life, seen from the server: validate the database,
start the writer, feed it writes and reads, hear its acknowledgements,
restart it after a crash (replaying what it had not acknowledged), and
clean up. A part of :class:`~livenotify.storage.bridge.StorageBridge` (its
base), which holds the state below.
"""

from __future__ import annotations

import logging
import time
import uuid

import trio

from storage_proc import wire
from storage_proc.database import DatabaseLock, StorageFault
from storage_proc.pg import is_postgres
from storage_proc.writer import WriterOptions

from ..config import Config
from .backlog import Backlog
from .errors import StorageError
from .limits import CHUNK_BYTES, CHUNK_WRITES
from .process import STABLE_AFTER, WriterProcess, restart_writer, start_writer
from .reads import Reads

log = logging.getLogger("livenotify.storage")


class Supervision:
    """Runs and supervises the writer process for :class:`StorageBridge`."""

    path: str
    config: Config
    log_state: dict[str, object]
    lost: int
    _batch_size: int
    _batch_ms: float
    _in_flight_limit: int
    _run_id: str
    _backlog: Backlog
    _reads: Reads
    _wake: trio.Event
    _writer: WriterProcess | None
    _lock: DatabaseLock | None
    _ran: bool
    _ran_writer: bool
    _running: bool
    _closed: bool
    _stopping: bool
    _stopped: trio.Event
    _counters: dict[str, int]

    def _acknowledge(self, seq: int, outbox_rows: int | None) -> None:
        raise NotImplementedError

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
                if not is_postgres(self.path):  # PostgreSQL is shared on purpose
                    self._lock = await trio.to_thread.run_sync(DatabaseLock, self.path)
            except StorageFault as exc:
                raise StorageError(str(exc)) from None
            writer = await self._start_writer()
            self._running = True
            task_status.started()
            await self._supervise(writer)
        finally:
            with trio.CancelScope(shield=True):
                await self._cleanup()

    async def _start_writer(self) -> WriterProcess:
        config = self.config
        options = WriterOptions(
            self.path,
            self._run_id,
            self._batch_size,
            self._batch_ms,
            check=not self._ran_writer,
            fresh_epoch=uuid.uuid4().hex[:8],
            history_size=config.history_size,
            history_ttl=config.history_ttl,
            outbox_retention=config.outbox_retention,
        )
        self._ran_writer = True
        writer = self._writer = await start_writer(options)
        ready = writer.ready
        assert ready is not None
        if ready.log:
            self.log_state = dict(ready.log)
        # What the previous writer committed without being able to ack it.
        self._acknowledge(ready.committed_seq, None)
        self._backlog.restart()
        return writer

    async def _supervise(self, writer: WriterProcess) -> None:
        failures = 0
        while True:
            await self._serve(writer)
            if self._stopping and not self._backlog.unacked:
                log.info(
                    "storage closed: %d writes committed, %d writer restarts",
                    self._backlog.acked,
                    self._counters["restarts"],
                )
                return
            if time.monotonic() - writer.started_at >= STABLE_AFTER:
                failures = 0
            self._counters["restarts"] += 1
            writer, failures = await restart_writer(
                writer, self._start_writer, failures, len(self._backlog), quiet=self._closed
            )

    async def _serve(self, writer: WriterProcess) -> None:
        """Feed and hear one writer until its end of the socket closes."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed, writer)
                await self._receive(writer)
                nursery.cancel_scope.cancel()
        finally:
            self._reads.requeue()
            with trio.CancelScope(shield=True):
                await writer.reap()
            self._writer = None

    async def _receive(self, writer: WriterProcess) -> None:
        while True:
            message = await writer.receive()
            if message is None:
                return
            if isinstance(message, wire.Ack):
                self._counters["commits"] += 1
                self._acknowledge(message.seq, message.outbox_rows)
            elif isinstance(message, wire.Answer):
                self._reads.answered(message)
            elif isinstance(message, wire.Failed):
                log.error("storage writer pid=%d: a write failed: %s", writer.pid, message.message)
            elif not isinstance(message, wire.Closed):
                log.error("storage writer pid=%d sent %r", writer.pid, message)

    async def _feed(self, writer: WriterProcess) -> None:
        close_sent = False
        backlog = self._backlog
        try:
            while True:
                chunk = backlog.next_chunk(self._in_flight_limit, CHUNK_WRITES, CHUNK_BYTES)
                if chunk is not None:
                    await writer.send(wire.Writes(*chunk))
                elif (query := self._reads.next_unsent()) is not None:
                    # After the writes sent so far: the read sees them.
                    await writer.send(query)
                elif self._stopping and not close_sent and backlog.sent == backlog.seq:
                    close_sent = True
                    await writer.send(wire.Close())
                else:
                    self._wake = trio.Event()
                    await self._wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the writer is gone; _receive sees the end and we restart

    async def _cleanup(self) -> None:
        self._running = False
        self._closed = True
        if self._writer is not None:
            await self._writer.reap()
            self._writer = None
        self._reads.fail_all()
        self.lost = len(self._backlog)
        if self.lost:
            log.error(
                "storage stopped with %d accepted writes not acknowledged"
                " (sent ones may be committed)",
                self.lost,
            )
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._stopped.set()
