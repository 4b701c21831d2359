"""PostgreSQL for the writer (``--db postgresql://...``), through psycopg 3.

:class:`PgConnection` gives the writer the few calls it makes of an
``sqlite3.Connection`` (``execute``, ``executemany``, ``in_transaction``,
``close``), translating our SQL (written once, in the subset both speak)
and our values:

- ``?`` placeholders become ``%s``; ``BEGIN IMMEDIATE`` becomes ``BEGIN``.
- PostgreSQL TEXT holds neither NUL nor lone surrogates, which JSON and so
  our clients can send. Such a string (and any string starting with
  ``\\x01``, to keep the mapping one to one) is stored as ``\\x01`` and the
  hex of its ``surrogatepass`` UTF-8; reading one back gives the bytes,
  which :func:`storage_proc.ops.from_sql` decodes as it does SQLite BLOBs.

psycopg is imported only here, only when a PostgreSQL URL is used.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

#: Marks an escaped value (see the module docstring).
ESCAPE: Final = "\x01"


def is_postgres(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a file."""
    return db.startswith(("postgresql://", "postgres://"))


def display(db: str) -> str:
    """``db`` for a log line or error: a URL without its password."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", db) if is_postgres(db) else db


def _param(value: Any) -> Any:
    if isinstance(value, bytes):
        return ESCAPE + value.hex()
    if isinstance(value, str) and ("\x00" in value or value.startswith(ESCAPE)):
        return ESCAPE + value.encode("utf-8", "surrogatepass").hex()
    return value


def _value(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(ESCAPE):
        return bytes.fromhex(value[1:])
    return value


def _row(row: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if row is None else tuple(_value(v) for v in row)


def _sql(text: str) -> str:
    if text.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN"
    return text.replace("?", "%s")


class PgCursor:
    """The results of one statement, values translated back."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> tuple[Any, ...] | None:
        return _row(self._cursor.fetchone())

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(_value(v) for v in row) for row in self._cursor.fetchall()]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class PgConnection:
    """One autocommit psycopg connection; transactions are explicit BEGINs."""

    def __init__(self, url: str) -> None:
        import psycopg  # only when PostgreSQL is used

        self._conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> PgCursor:
        return PgCursor(self._conn.execute(_sql(sql), [_param(p) for p in parameters]))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> PgCursor:
        cursor = self._conn.cursor()
        cursor.executemany(_sql(sql), [[_param(p) for p in row] for row in rows])
        return PgCursor(cursor)

    @property
    def in_transaction(self) -> bool:
        import psycopg

        return bool(self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    def close(self) -> None:
        self._conn.close()


def errors() -> tuple[type[Exception], ...]:
    """psycopg's base error, to catch beside ``sqlite3.Error``."""
    import psycopg

    return (psycopg.Error,)


#: What the writer's code is given: an SQLite connection or a PostgreSQL one.
Connection = sqlite3.Connection | PgConnection
