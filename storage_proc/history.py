"""The notification log on disk: epoch, clean-shutdown marker, retention.

``meta`` holds:

- ``epoch``: the log's current continuity (see DESIGN "Positions and
  history"). Kept across a clean restart; replaced at start-up when the last
  run did not end cleanly, because its un-acknowledged tail may be lost and
  an offset must never name other content in the same epoch.
- ``clean``: ``1`` once a writer closed after the server flushed every
  write; set to ``0`` at start-up, so a ``kill -9`` of the server leaves 0.
- ``floor``: offsets of the current epoch up to this one are out of history
  (trimmed). Rows kept for a pending e-mail may survive below it.
- ``base``: the last offset before the epoch began (``floor == base``:
  nothing of this epoch was trimmed).
- ``trimmed_seq``: the ``log_seq`` up to which retention has cut.

Offsets keep counting from the largest one stored, across epochs, so the
``"offset"`` column stays unique.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from .ops import from_sql
from .pg import Connection

#: Rows retention deletes per statement (one short transaction each): the
#: writer stays responsive to writes and reads between rounds.
RETENTION_BATCH: Final = 2000
#: Free pages kept for reuse before giving the rest back to the file system.
KEEP_FREE_PAGES: Final = 1024


def stamp(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds, as every ``time`` column holds."""
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _meta(conn: Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}


def _set(conn: Connection, **values: object) -> None:
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(k, str(v)) for k, v in values.items()],
    )


def start_log(conn: Connection, fresh_epoch: str) -> dict[str, object]:
    """At server start: keep or replace the epoch, mark the run unclean.

    Returns ``epoch``, ``head`` (last offset given out), ``floor``,
    ``kept`` (the epoch survived) and ``started`` (the epoch's start time).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        meta = _meta(conn)
        row = conn.execute('SELECT max("offset") FROM notifications').fetchone()
        head = int(row[0]) if row and row[0] is not None else 0
        kept = meta.get("clean") == "1" and bool(meta.get("epoch"))
        if kept:
            epoch, floor, started = meta["epoch"], int(meta.get("floor", "0")), meta["started"]
            base = int(meta.get("base", "0"))
        else:
            # Nothing of the new epoch is trimmed: its history starts after head.
            epoch, floor, base, started = fresh_epoch, head, head, stamp(time.time())
            _set(conn, epoch=epoch, floor=floor, base=base, started=started)
        _set(conn, clean=0)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {
        "epoch": epoch,
        "head": head,
        "floor": floor,
        "base": base,
        "kept": kept,
        #: An epoch existed before (False: a new database).
        "previous": bool(meta.get("epoch")),
        "started": started,
    }


def mark_clean(conn: Connection) -> None:
    """Inside the writer's last transaction: every accepted write is in."""
    _set(conn, clean=1)


def history_rows(
    conn: Connection, epoch: str, after: int, since_time: str | None, before: int
) -> dict[str, object]:
    """History of ``epoch`` between offsets ``after`` and ``before`` (both
    excluded; and time >= ``since_time`` if given), in offset order.

    Returns ``floor`` and ``base`` (-1 for an epoch that is not the current
    one), ``first_time`` (time of the oldest entry in history, or None) and
    ``rows``: (offset, event, payload, time).
    """
    meta = _meta(conn)
    if meta.get("epoch") != epoch:
        return {"floor": -1, "base": -1, "first_time": None, "rows": []}
    floor = int(meta.get("floor", "0"))
    first = conn.execute(
        'SELECT time FROM notifications WHERE "offset" = ? AND epoch = ?', (floor + 1, epoch)
    ).fetchone()
    rows = conn.execute(
        'SELECT "offset", event, payload, time FROM notifications'
        ' WHERE epoch = ? AND "offset" > ? AND "offset" < ? AND time >= ?'
        ' ORDER BY "offset"',
        (epoch, max(after, floor), before, since_time or ""),
    )
    return {
        "floor": floor,
        "base": int(meta.get("base", "0")),
        "first_time": str(first[0]) if first else None,
        "rows": [(int(r[0]), from_sql(r[1]), from_sql(r[2]), str(r[3])) for r in rows],
    }


def _size_boundary(conn: Connection, history_size: int) -> int:
    """The ``log_seq`` up to which rows are beyond the newest ``history_size``."""
    row = conn.execute(
        "SELECT log_seq FROM notifications ORDER BY log_seq DESC LIMIT 1 OFFSET ?",
        (history_size,),
    ).fetchone()
    return int(row[0]) if row else 0


def _retention_due(
    conn: Connection, now: float, history_size: int, history_ttl: float, outbox_ttl: float
) -> bool:
    # Cheap looks (one row each, by index) before taking the write lock:
    # under a steady trickle most rounds find nothing to do.
    row = conn.execute("SELECT value FROM meta WHERE key = 'trimmed_seq'").fetchone()
    trimmed = int(row[0]) if row else 0
    oldest = conn.execute(
        "SELECT log_seq, time FROM notifications WHERE log_seq > ? ORDER BY log_seq LIMIT 1",
        (trimmed,),
    ).fetchone()
    if oldest is not None and (
        int(oldest[0]) <= _size_boundary(conn, history_size)
        or str(oldest[1]) < stamp(now - history_ttl)
    ):
        return True
    leftover = conn.execute(
        "SELECT 1 FROM notifications AS n WHERE n.log_seq <= ? AND NOT EXISTS"
        " (SELECT 1 FROM outbox AS o WHERE o.notification_id = n.id) LIMIT 1",
        (trimmed,),
    ).fetchone()
    if leftover is not None:
        return True
    sent = conn.execute(
        "SELECT 1 FROM outbox WHERE state = 'queued' AND queued_at < ? LIMIT 1",
        (stamp(now - outbox_ttl),),
    ).fetchone()
    return sent is not None


def retain(
    conn: Connection, now: float, history_size: int, history_ttl: float, outbox_ttl: float
) -> int:
    """One round of retention in its own transaction; rows deleted.

    Notifications beyond the newest ``history_size`` or older than
    ``history_ttl`` seconds leave history (the floor moves) and are deleted
    once no outbox row needs them; outbox rows queued more than
    ``outbox_ttl`` seconds ago are deleted. At most :data:`RETENTION_BATCH`
    rows per table per round.
    """
    if not _retention_due(conn, now, history_size, history_ttl, outbox_ttl):
        return 0  # no transaction, no fsync: an idle round costs a few reads
    conn.execute("BEGIN IMMEDIATE")
    try:
        meta = _meta(conn)
        trimmed = int(meta.get("trimmed_seq", "0"))
        by_size = _size_boundary(conn, history_size)
        old = stamp(now - history_ttl)
        candidates = conn.execute(
            'SELECT log_seq, "offset", epoch, time FROM notifications'
            " WHERE log_seq > ? ORDER BY log_seq LIMIT ?",
            (trimmed, RETENTION_BATCH),
        ).fetchall()
        cut, floor = trimmed, int(meta.get("floor", "0"))
        for log_seq, offset, epoch, at in candidates:
            if log_seq > by_size and str(at) >= old:
                break
            cut = int(log_seq)
            if epoch == meta.get("epoch") and offset is not None:
                floor = max(floor, int(offset))
        deleted = 0
        if cut > trimmed:
            _set(conn, trimmed_seq=cut, floor=floor)
        deleted += conn.execute(
            "DELETE FROM outbox WHERE outbox_id IN (SELECT outbox_id FROM outbox"
            " WHERE state = 'queued' AND queued_at < ? LIMIT ?)",
            (stamp(now - outbox_ttl), RETENTION_BATCH),
        ).rowcount
        deleted += conn.execute(
            "DELETE FROM notifications WHERE log_seq IN (SELECT n.log_seq FROM notifications"
            " AS n WHERE n.log_seq <= ? AND NOT EXISTS (SELECT 1 FROM outbox AS o"
            " WHERE o.notification_id = n.id) LIMIT ?)",
            (cut, RETENTION_BATCH),
        ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if not isinstance(conn, sqlite3.Connection):
        return deleted  # PostgreSQL's autovacuum reuses the space
    free = conn.execute("PRAGMA freelist_count").fetchone()
    if deleted and free and int(free[0]) > 2 * KEEP_FREE_PAGES:
        # Give back most free pages (a no-op unless auto_vacuum is
        # incremental); the rest are reused by the next inserts.
        conn.execute(f"PRAGMA incremental_vacuum({int(free[0]) - KEEP_FREE_PAGES})")
    return deleted
