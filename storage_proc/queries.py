"""The reads the writer process answers for the server (``wire.Query``).

The server process opens no SQLite connection: reads go over the writer's
socket and run here, on the writer's connection, after it committed its open
batch. A vanished, unreadable or garbage database file then costs a read (an
error answer, or a writer that dies and is restarted), never the server:
SQLite's memory-mapped ``-shm`` lives in this process only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .history import history_rows
from .ops import from_sql, to_sql
from .pg import Connection


def subscriptions(conn: Connection, email: str) -> list[str]:
    """The events ``email`` is subscribed to, as committed."""
    rows = conn.execute("SELECT event FROM subscriptions WHERE email = ?", (to_sql(email),))
    return sorted(from_sql(row[0]) for row in rows)


def pending_mail(
    conn: Connection, limit: int, after: int = 0
) -> list[tuple[int, str, str, str, str]]:
    """Up to ``limit`` pending outbox rows after ``after``, oldest first:
    (outbox_id, notification_id, email, event, payload)."""
    rows = conn.execute(
        "SELECT o.outbox_id, o.notification_id, o.email, n.event, n.payload"
        " FROM outbox AS o JOIN notifications AS n ON n.id = o.notification_id"
        " WHERE o.state = 'pending' AND o.outbox_id > ?"
        " ORDER BY o.outbox_id LIMIT ?",
        (after, limit),
    )
    return [
        (int(r[0]), from_sql(r[1]), from_sql(r[2]), from_sql(r[3]), from_sql(r[4])) for r in rows
    ]


def subscriber(conn: Connection, email: str) -> list[object] | None:
    """``[confirmed, confirm_code, code_expires, code_sent]`` of ``email``,
    or None for an address never registered."""
    row = conn.execute(
        "SELECT confirmed, confirm_code, code_expires, code_sent FROM subscribers WHERE email = ?",
        (to_sql(email),),
    ).fetchone()
    if row is None:
        return None
    return [bool(row[0]), row[1], row[2], row[3]]


def confirmation(conn: Connection, code: str) -> list[str] | None:
    """``[email, code_expires]`` of the address whose pending code is ``code``."""
    row = conn.execute(
        "SELECT email, code_expires FROM subscribers WHERE confirm_code = ?", (code,)
    ).fetchone()
    if row is None:
        return None
    return [from_sql(row[0]), str(row[1])]


def position(conn: Connection, email: str) -> tuple[str, int] | None:
    """(epoch, offset) where ``email``'s last connection ended; None if unknown."""
    row = conn.execute(
        "SELECT last_epoch, last_offset FROM subscribers WHERE email = ?", (to_sql(email),)
    ).fetchone()
    if row is None or row[0] is None or row[1] is None:
        return None
    return str(row[0]), int(row[1])


QUERIES: Final[dict[str, Callable[..., Any]]] = {
    "subscriptions": subscriptions,
    "pending_mail": pending_mail,
    "history": history_rows,
    "subscriber": subscriber,
    "confirmation": confirmation,
    "position": position,
}


def run(conn: Connection, name: str, args: tuple[object, ...]) -> object:
    """Answer the query ``name`` (KeyError for an unknown one)."""
    return QUERIES[name](conn, *args)
