"""The writer process: the only connection that writes the database.

It opens and migrates the database, says :class:`~storage_proc.wire.Ready`,
then applies the writes it receives in batches: one transaction holds up to
``batch_size`` writes or whatever arrived within ``batch_ms`` of the batch's
first write, whichever comes first. After each commit it sends an
:class:`~storage_proc.wire.Ack` naming the last sequence number committed;
the bridge keeps every write until it is acknowledged and replays the rest
to a new writer if this one dies.

Between batches it answers :class:`~storage_proc.wire.Query` reads (after
committing the open batch, so a read sees every write sent before it) and
runs retention (:func:`storage_proc.history.retain`) about once a second.

The last committed sequence number of the bridge's *run* (one per server
run) is stored in ``writer_progress`` inside the same transaction, so a
restarted writer skips writes that were committed but whose ack was lost.

The process ignores SIGINT and SIGTERM: a Ctrl-C or a service manager
signals the whole process group, and the writer must outlive the server's
drain to flush it. It ends on :class:`~storage_proc.wire.Close` or when the
server's end of the socket closes (the server died); ``kill -9`` still works.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass

from . import database, history, ops, queries, wire
from .database import StorageFault, hold_writer_lock, open_writer
from .pg import Connection, is_postgres

#: Exit statuses, for the supervisor's log line.
EXIT_FATAL = 2
EXIT_WRITE_FAILED = 3
#: Seconds a new writer waits for the previous one (an orphan) to exit.
WRITER_LOCK_WAIT = 20.0
#: Seconds between retention rounds (each a short batched transaction).
RETENTION_INTERVAL = 1.0
#: Seconds of deleting per round at most.
RETENTION_BUDGET = 0.1


@dataclass(frozen=True, slots=True)
class WriterOptions:
    """What the bridge tells a writer process when it starts it."""

    path: str
    #: Names this server run in ``writer_progress``.
    run_id: str
    batch_size: int
    batch_ms: float
    #: Server start, not a restart after a crash: run ``PRAGMA
    #: quick_check`` (linear in the file size) and settle the log's epoch.
    check: bool = True
    #: The log's epoch if the previous run did not end cleanly.
    fresh_epoch: str = ""
    #: Retention (0 turns that part off).
    history_size: int = 100_000
    history_ttl: float = 86_400.0
    outbox_retention: float = 3_600.0


class Writer:
    """Applies writes in batched transactions and acknowledges each commit."""

    def __init__(self, conn: Connection, sock: socket.socket, options: WriterOptions):
        self.conn = conn
        self.sock = sock
        self.options = options
        self.committed = self._progress()
        self._batch_deadline: float | None = None
        self._batch_writes = 0
        self._batch_last = self.committed
        self._batch_outbox = 0

    def _progress(self) -> int:
        row = self.conn.execute("SELECT epoch, seq FROM writer_progress WHERE id = 1").fetchone()
        if row is not None and row[0] == self.options.run_id:
            return int(row[1])
        return 0

    @property
    def deadline(self) -> float | None:
        """When the open batch must commit, or None when none is open."""
        return self._batch_deadline

    def apply(self, first_seq: int, rows: list[tuple[object, ...]]) -> None:
        """Apply a run of (packed) writes, committing whenever a batch fills up."""
        for offset, row in enumerate(rows):
            seq = first_seq + offset
            if seq <= self._batch_last:
                continue  # replayed, and already applied in this epoch
            if self._batch_deadline is None:
                self.conn.execute("BEGIN IMMEDIATE")
                self._batch_deadline = time.monotonic() + self.options.batch_ms / 1000
            self._batch_outbox += ops.apply(self.conn, ops.unpack(row))
            self._batch_last = seq
            self._batch_writes += 1
            if self._batch_writes >= self.options.batch_size:
                self.commit()
        if self._batch_deadline is not None and time.monotonic() >= self._batch_deadline:
            self.commit()

    def commit(self) -> None:
        """Commit the open batch (if any) and acknowledge it."""
        if self._batch_deadline is None:
            return
        self.conn.execute(
            "UPDATE writer_progress SET epoch = ?, seq = ? WHERE id = 1",
            (self.options.run_id, self._batch_last),
        )
        self.conn.execute("COMMIT")
        self.committed = self._batch_last
        outbox = self._batch_outbox
        self._batch_deadline = None
        self._batch_writes = 0
        self._batch_outbox = 0
        self.sock.sendall(wire.encode(wire.Ack(self.committed, outbox)))

    def close(self) -> None:
        """Commit and mark the log clean: the server flushed every write."""
        if self._batch_deadline is None:
            self.conn.execute("BEGIN IMMEDIATE")
            self._batch_deadline = time.monotonic()
        history.mark_clean(self.conn)
        self.commit()

    def answer(self, query: wire.Query) -> None:
        """Answer a read, after committing the writes sent before it."""
        self.commit()
        failures: tuple[type[Exception], ...] = (*database.DB_ERRORS, KeyError, TypeError)
        try:
            answer = wire.Answer(query.qid, True, queries.run(self.conn, query.name, query.args))
        except failures as exc:
            answer = wire.Answer(query.qid, False, f"{type(exc).__name__}: {exc}")
        self.sock.sendall(wire.encode(answer))

    def retain(self) -> None:
        """One retention round, outside any batch."""
        self.commit()
        opts = self.options
        size = opts.history_size if opts.history_size > 0 else 1 << 62
        ttl = opts.history_ttl if opts.history_ttl > 0 else 1e12
        keep = opts.outbox_retention if opts.outbox_retention > 0 else 1e12
        # Rounds of short transactions until caught up or the budget is
        # spent: keeps pace with heavy publishing, yet writes wait little.
        budget = time.monotonic() + RETENTION_BUDGET
        while history.retain(self.conn, time.time(), size, ttl, keep):
            if time.monotonic() >= budget:
                break

    def rollback(self) -> None:
        """Drop the open batch; its writes stay un-acknowledged for replay."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._batch_deadline = None
        self._batch_last = self.committed


def writer_main(sock: socket.socket, options: WriterOptions) -> None:
    """Entry point of the writer process (see :mod:`storage_proc.__main__`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        # One writer at a time: the orphan of a server killed by SIGKILL
        # may still be committing; a new one must see what it committed.
        if not is_postgres(options.path):
            hold_writer_lock(options.path, WRITER_LOCK_WAIT)
        conn, (before, after) = open_writer(options.path, check=options.check)
    except StorageFault as exc:
        _send_quietly(sock, wire.Fatal(str(exc)))
        sys.exit(EXIT_FATAL)
    except Exception as exc:  # one line for the operator, never a traceback
        _send_quietly(sock, wire.Fatal(f"cannot use database {options.path}: {exc!r}"))
        sys.exit(EXIT_FATAL)
    try:
        log = history.start_log(conn, options.fresh_epoch) if options.check else {}
    except database.DB_ERRORS as exc:
        _send_quietly(sock, wire.Fatal(f"cannot use database {options.path}: {exc}"))
        conn.close()
        sys.exit(EXIT_FATAL)
    writer = Writer(conn, sock, options)
    try:
        sock.sendall(wire.encode(wire.Ready(writer.committed, before, after, log)))
        _loop(writer, wire.BlockingReader(sock))
    except database.DB_ERRORS as exc:
        writer.rollback()
        _send_quietly(sock, wire.Failed(f"{type(exc).__name__}: {exc}"))
        sys.exit(EXIT_WRITE_FAILED)
    except OSError:
        # The server's end is gone: nobody is left to acknowledge to, and
        # whatever was not acknowledged the server has as well (or lost
        # with itself). Commit what we hold and stop.
        _commit_at_eof(writer)
    finally:
        conn.close()


def _loop(writer: Writer, reader: wire.BlockingReader) -> None:
    next_retention = time.monotonic() + RETENTION_INTERVAL
    while True:
        deadline = writer.deadline
        wake = next_retention if deadline is None else min(deadline, next_retention)
        message = reader.read(wake)
        if time.monotonic() >= next_retention:
            writer.retain()
            next_retention = time.monotonic() + RETENTION_INTERVAL
        if isinstance(message, wire.Writes):
            writer.apply(message.first_seq, message.rows)
        elif isinstance(message, wire.Query):
            writer.answer(message)
        elif message is wire.TIMED_OUT:
            if writer.deadline is not None and time.monotonic() >= writer.deadline:
                writer.commit()
        elif isinstance(message, wire.Close):
            writer.close()
            writer.sock.sendall(wire.encode(wire.Closed()))
            return
        elif message is wire.END_OF_STREAM:
            _commit_at_eof(writer)
            return
        else:
            raise sqlite3.ProgrammingError(f"unexpected message {type(message).__name__}")


def _commit_at_eof(writer: Writer) -> None:
    # The server is gone, so the ack cannot be sent; the data still counts.
    try:
        writer.commit()
    except OSError:
        pass  # committed; the ack has nowhere to go
    except database.DB_ERRORS:
        writer.rollback()


def _send_quietly(sock: socket.socket, message: wire.FromWriter) -> None:
    try:
        sock.sendall(wire.encode(message))
    except OSError:
        pass
