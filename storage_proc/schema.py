"""The database schema as a list of forward migrations.

``schema_version`` holds one row, the number of migrations applied. A new
database starts at 0 and runs every step; an older one runs the steps it
misses, each in its own transaction (SQLite DDL is transactional, so a step
either lands whole or not at all). There are no downgrades: a database newer
than this code is refused rather than guessed at.

Version history:

1. ``subscribers`` (e-mail, first and last seen) and ``subscriptions``
   (e-mail, event, since).
2. ``notifications``: the notification log (id, event, payload, time), ordered
   by ``log_seq`` for replay after reconnect.
3. ``outbox`` (one e-mail job per notification and registered subscriber,
   ``pending`` until handed to Celery, then ``queued``) and
   ``writer_progress`` (the last committed write sequence number, so a
   restarted writer does not apply a replayed write twice).
4. Positions: ``notifications`` gains ``"offset"`` (gap-free, 1, 2, 3, ...
   across all events; quoted, OFFSET is an SQL keyword) and ``epoch``;
   ``meta`` (key/value: the log's epoch, the clean-shutdown marker, the
   history floor); indexes for retention.

Times are ISO 8601 UTC text with milliseconds (``2024-01-15T14:30:00.000Z``),
readable in the ``sqlite3`` shell and ordered as text.
"""

from __future__ import annotations

import sqlite3
from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1
    """
    CREATE TABLE subscribers (
        email      TEXT PRIMARY KEY,
        first_seen TEXT NOT NULL,
        last_seen  TEXT NOT NULL
    );
    CREATE TABLE subscriptions (
        email TEXT NOT NULL,
        event TEXT NOT NULL,
        since TEXT NOT NULL,
        PRIMARY KEY (email, event)
    ) WITHOUT ROWID;
    """,
    # 2
    """
    CREATE TABLE notifications (
        log_seq INTEGER PRIMARY KEY,
        id      TEXT NOT NULL UNIQUE,
        event   TEXT NOT NULL,
        payload TEXT NOT NULL,
        time    TEXT NOT NULL
    );
    CREATE INDEX subscriptions_by_event ON subscriptions (event, email);
    """,
    # 3
    """
    CREATE TABLE outbox (
        outbox_id       INTEGER PRIMARY KEY,
        notification_id TEXT NOT NULL REFERENCES notifications (id),
        email           TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'queued')),
        created         TEXT NOT NULL,
        queued_at       TEXT,
        UNIQUE (notification_id, email)
    );
    CREATE INDEX outbox_pending ON outbox (outbox_id) WHERE state = 'pending';
    CREATE TABLE writer_progress (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        epoch TEXT NOT NULL,
        seq   INTEGER NOT NULL
    );
    INSERT INTO writer_progress (id, epoch, seq) VALUES (1, '', 0);
    """,
    # 4
    """
    ALTER TABLE notifications ADD COLUMN "offset" INTEGER;
    ALTER TABLE notifications ADD COLUMN epoch TEXT;
    CREATE UNIQUE INDEX notifications_by_offset ON notifications ("offset")
        WHERE "offset" IS NOT NULL;
    CREATE INDEX outbox_by_notification ON outbox (notification_id);
    CREATE INDEX outbox_queued ON outbox (queued_at) WHERE state = 'queued';
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)

#: The version this code writes; a database above it is refused.
SCHEMA_VERSION: Final = len(MIGRATIONS)


class SchemaError(Exception):
    """The file is an SQLite database, but not one we can use."""


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of ``conn``'s database; 0 for an empty database.

    Raises :class:`SchemaError` for a database with tables of its own but no
    ``schema_version`` (someone else's database: refusing it beats silently
    adding our tables next to theirs).
    """
    tables = {
        str(row[0]) for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
    }
    if "schema_version" not in tables:
        if tables:
            raise SchemaError("it is not a livenotify database (no schema_version table)")
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    if row is None or not isinstance(row[0], int):
        raise SchemaError("its schema_version table is empty")
    return row[0]


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring the database up to :data:`SCHEMA_VERSION`; return (before, after).

    ``conn`` must be in autocommit mode (``isolation_level=None``): each step
    runs in its own ``BEGIN IMMEDIATE`` transaction, so a concurrent
    migration by another process waits for the lock instead of racing.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = current_version(conn)
        if before > SCHEMA_VERSION:
            raise SchemaError(
                f"its schema version {before} is newer than this livenotify "
                f"supports ({SCHEMA_VERSION}); upgrade livenotify"
            )
        if before == 0:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    for version in range(before + 1, SCHEMA_VERSION + 1):
        _apply(conn, version)
    return before, SCHEMA_VERSION


def _apply(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Split by hand: executescript() would COMMIT our transaction first.
        for statement in MIGRATIONS[version - 1].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = ?", (version,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
