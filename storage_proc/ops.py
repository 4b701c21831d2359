"""The writes the writer process applies, and how each one is applied.

Every write is idempotent: applying an already-applied suffix of the write
stream again leaves the same database. That is what makes replay after a
writer crash safe even where ``writer_progress`` cannot tell (a write
committed, the process killed before its ack left). Times travel inside the
write, stamped when the server accepted it, so a replay stores the same
values as the first attempt.

Any ``str`` is stored byte for byte: valid Unicode as TEXT, and a string
holding lone surrogates (valid in JSON, not encodable as UTF-8) as a BLOB
of its ``surrogatepass`` encoding. A TEXT value never equals a BLOB in
SQLite, so the mapping is one to one and lookups by e-mail stay exact.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .pg import Connection


class RegisterWrite(NamedTuple):
    """An e-mail address seen: insert it, or move its ``last_seen``.

    ``confirmed``: a new row starts confirmed (``--no-confirm``) or not
    (double opt-in); an existing row is never un-confirmed.
    """

    email: str
    at: str
    confirmed: bool = True


class SetConfirmation(NamedTuple):
    """A confirmation mail for ``email`` with ``code`` was handed over."""

    email: str
    code: str
    expires: str
    at: str


class ConfirmWrite(NamedTuple):
    """``email`` proved it owns the address with ``code``: mail it from now on."""

    email: str
    code: str


class SubscribeWrite(NamedTuple):
    """Add ``events`` to ``email``'s subscriptions (kept ``since`` the first time)."""

    email: str
    events: tuple[str, ...]
    at: str


class UnsubscribeWrite(NamedTuple):
    """Remove ``events`` from ``email``'s subscriptions."""

    email: str
    events: tuple[str, ...]


class LogNotification(NamedTuple):
    """Log a published notification and queue one e-mail job per subscriber."""

    notification_id: str
    event: str
    payload: str
    at: str
    #: Its position in the notification log (None: written without one).
    offset: int | None = None
    epoch: str | None = None


class MarkQueued(NamedTuple):
    """Outbox rows handed to Celery: ``pending`` -> ``queued``."""

    outbox_ids: tuple[int, ...]
    at: str


class PositionWrite(NamedTuple):
    """Where ``email``'s last connection ended in the notification log:
    every notification up to ``offset`` (in ``epoch``) was written to it."""

    email: str
    epoch: str
    offset: int


Write = (
    RegisterWrite | SubscribeWrite | UnsubscribeWrite | LogNotification | MarkQueued
    | SetConfirmation | ConfirmWrite | PositionWrite
)  # fmt: skip

#: On the wire a write is a plain tuple ``(tag, *fields)``: pickling a
#: NamedTuple costs about seven times as much as a plain tuple, and the
#: socket carries tens of thousands of writes a second.
KINDS: tuple[type[Write], ...] = (
    RegisterWrite,
    SubscribeWrite,
    UnsubscribeWrite,
    LogNotification,
    MarkQueued,
    SetConfirmation,
    ConfirmWrite,
    PositionWrite,
)
_TAGS: dict[type[Write], int] = {kind: tag for tag, kind in enumerate(KINDS)}


def pack(write: Write) -> tuple[object, ...]:
    """The wire form of ``write``."""
    return (_TAGS[type(write)], *write)


def unpack(row: tuple[object, ...]) -> Write:
    """Inverse of :func:`pack`."""
    tag, *fields = row
    kind: Any = KINDS[tag]  # type: ignore[call-overload]
    write: Write = kind(*fields)
    return write


#: The "every event" subscription; its subscribers get every notification.
ALL_EVENTS = "*"

_OUTBOX_FANOUT = """
    INSERT INTO outbox (notification_id, email, state, created)
    SELECT DISTINCT ?, s.email, 'pending', ?
    FROM subscriptions AS s JOIN subscribers AS r ON r.email = s.email
    WHERE s.event IN (?, ?) AND r.confirmed = 1
    ON CONFLICT DO NOTHING
"""


def to_sql(text: str) -> str | bytes:
    """The SQL value that stores ``text`` byte for byte (see module docstring)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def from_sql(value: object) -> str:
    """Inverse of :func:`to_sql`."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected TEXT or BLOB, got {type(value).__name__}")


def apply(conn: Connection, write: Write) -> int:
    """Apply one write inside the caller's transaction; return outbox rows added."""
    match write:
        case RegisterWrite(email, at, confirmed):
            conn.execute(
                "INSERT INTO subscribers (email, first_seen, last_seen, confirmed)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (email) DO UPDATE SET last_seen = CASE"
                " WHEN excluded.last_seen > subscribers.last_seen THEN excluded.last_seen"
                " ELSE subscribers.last_seen END,"
                " confirmed = CASE WHEN excluded.confirmed = 1 THEN 1"
                " ELSE subscribers.confirmed END",
                (to_sql(email), at, at, 1 if confirmed else 0),
            )
        case SetConfirmation(email, code, expires, at):
            conn.execute(
                "UPDATE subscribers SET confirm_code = ?, code_expires = ?, code_sent = ?"
                " WHERE email = ?",
                (code, expires, at, to_sql(email)),
            )
        case ConfirmWrite(email, code):
            conn.execute(
                "UPDATE subscribers SET confirmed = 1 WHERE email = ? AND confirm_code = ?",
                (to_sql(email), code),
            )
        case SubscribeWrite(email, events, at):
            key = to_sql(email)
            conn.executemany(
                "INSERT INTO subscriptions (email, event, since) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(key, to_sql(event), at) for event in events],
            )
        case UnsubscribeWrite(email, events):
            key = to_sql(email)
            conn.executemany(
                "DELETE FROM subscriptions WHERE email = ? AND event = ?",
                [(key, to_sql(event)) for event in events],
            )
        case LogNotification(notification_id, event, payload, at, offset, epoch):
            nid = to_sql(notification_id)
            cur = conn.execute(
                'INSERT INTO notifications (id, event, payload, time, "offset", epoch)'
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (nid, to_sql(event), to_sql(payload), at, offset, epoch),
            )
            if cur.rowcount != 1:
                return 0  # a replay: its outbox rows exist already
            cur = conn.execute(_OUTBOX_FANOUT, (nid, at, to_sql(event), ALL_EVENTS))
            return max(cur.rowcount, 0)
        case PositionWrite(email, epoch, offset):
            conn.execute(
                "UPDATE subscribers SET last_epoch = ?, last_offset = ? WHERE email = ?",
                (epoch, offset, to_sql(email)),
            )
        case MarkQueued(outbox_ids, at):
            conn.executemany(
                "UPDATE outbox SET state = 'queued', queued_at = ?"
                " WHERE outbox_id = ? AND state = 'pending'",
                [(at, outbox_id) for outbox_id in outbox_ids],
            )
    return 0
