"""Opening the database: validation, pragmas, the lock file, and the reads.

Start-up refuses, with one line naming the file and the cause:

- a file that is not an SQLite database, or fails ``PRAGMA quick_check``
  (corrupt);
- a database in use: by another livenotify server (it holds an exclusive
  ``flock`` on ``<db>.lock`` for its whole life, across writer restarts, and
  the kernel drops it when that server dies, even by ``kill -9``), or by any
  other program holding SQLite's write lock for longer than
  ``STARTUP_BUSY_MS``;
- a path we cannot create or write (missing or non-directory parent, a
  directory in the way, no permission, read-only file system);
- an SQLite database that is not ours, or of a newer schema version.

The lock file, not SQLite's own locking, answers "another server": SQLite's
locks only exist while a transaction is open, so two servers would happily
share one file and each believe it owned it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Final

from .pg import Connection, display, is_postgres
from .schema import SchemaError, migrate

#: How long start-up waits for SQLite's write lock held by another program
#: before calling the database locked: long enough for a backup tool's
#: short transaction, short enough that a wedged holder fails start-up fast.
STARTUP_BUSY_MS: Final = 2000
#: Once running, the writer waits this long for a reader's checkpoint or a
#: foreign lock before a write fails (and the writer restarts and replays).
WRITE_BUSY_MS: Final = 10_000
#: Bytes of WAL file kept after a checkpoint.
JOURNAL_SIZE_LIMIT: Final = 16 * 1024 * 1024


class StorageFault(Exception):
    """The database cannot be used; the message is one line for the operator."""


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOTDIR:
        return "a parent of the path is not a directory"
    if exc.errno == errno.ENOENT:
        return "its directory does not exist"
    return exc.strerror or str(exc)


def lock_path(db: str) -> str:
    """Where the server's exclusive lock for ``db`` lives."""
    return db + ".lock"


class DatabaseLock:
    """An exclusive ``flock`` on ``<db>.lock`` held for the server's life."""

    def __init__(self, db: str) -> None:
        self.path = lock_path(db)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageFault(
                f"cannot write database {db}: {_describe_os_error(exc)} ({self.path})"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._holder()
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StorageFault(
                    f"database {db} is in use by another livenotify server"
                    f" (pid {holder or '?'}, lock file {self.path})"
                ) from None
            raise StorageFault(f"cannot lock database {db}: {_describe_os_error(exc)}") from None
        # The holder's pid, for the message the next server prints.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def _holder(self) -> str:
        with contextlib.suppress(OSError):
            return os.pread(self._fd, 32, 0).decode(errors="replace").strip()
        return ""

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the ``flock``)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def hold_writer_lock(db: str, wait: float) -> int:
    """Take ``<db>.writer-lock`` (exclusive ``flock``) for this process's
    life, waiting up to ``wait`` seconds; its descriptor. StorageFault if
    another writer keeps it."""
    path = db + ".writer-lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageFault(f"cannot write database {db}: {_describe_os_error(exc)}") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise StorageFault(
                    f"cannot lock database {db}: {_describe_os_error(exc)}"
                ) from None
        if time.monotonic() >= deadline:
            os.close(fd)
            raise StorageFault(f"database {db}: a previous writer process still holds {path}")
        time.sleep(0.05)  # the old writer exits within moments of its EOF


#: What a failed database call raises; psycopg's error joins it once a
#: PostgreSQL database is opened.
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)


def open_writer(path: str, *, check: bool = True) -> tuple[Connection, tuple[int, int]]:
    """The writer's connection, validated and migrated; and (schema before, after).

    ``check`` runs ``PRAGMA quick_check`` first; without it a file that is
    not a database still fails (on the first read of its header). A
    ``postgresql://`` URL opens PostgreSQL instead.

    Raises :class:`StorageFault` with one line for the operator.
    """
    if is_postgres(path):
        return _open_postgres(path)
    target = Path(path)
    if target.is_dir():
        raise StorageFault(f"cannot write database {path}: it is a directory")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageFault(f"cannot open database {path}: {_why(path, exc)}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {STARTUP_BUSY_MS}")
        answer = conn.execute("PRAGMA quick_check").fetchall() if check else [("ok",)]
        if answer != [("ok",)]:
            problems = [line for row in answer for line in str(row[0]).splitlines()]
            first = problems[0] if problems else "no answer"
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise StorageFault(f"database {path} is corrupt: quick_check says {first!r}{more}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StorageFault(f"database {path} cannot use WAL mode (got {mode!r})")
        # FULL: an acknowledged write survives power loss, not only a crash.
        # Batching makes that one fsync per batch rather than per write.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Bound the WAL file left after a checkpoint: under steady
        # publishing it would otherwise keep its largest size for ever.
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        if not conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall():
            # A new database: pages freed by retention can be given back
            # (incremental_vacuum). Only settable before the first table.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        versions = migrate(conn)
        conn.execute(f"PRAGMA busy_timeout = {WRITE_BUSY_MS}")
    except StorageFault:
        conn.close()
        raise
    except SchemaError as exc:
        conn.close()
        raise StorageFault(f"cannot use database {path}: {exc}") from None
    except sqlite3.Error as exc:
        conn.close()
        raise StorageFault(f"cannot use database {path}: {_why(path, exc)}") from None
    return conn, versions


def _open_postgres(url: str) -> tuple[Connection, tuple[int, int]]:
    global DB_ERRORS
    try:
        from .pg import PgConnection, errors

        DB_ERRORS = (sqlite3.Error, *errors())
    except ImportError:
        raise StorageFault(
            "a postgresql:// database needs psycopg: pip install 'livenotify[postgresql]'"
        ) from None
    try:
        conn = PgConnection(url)
    except DB_ERRORS as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageFault(f"cannot open database {display(url)}: {first}") from None
    try:
        return conn, migrate(conn)
    except SchemaError as exc:
        conn.close()
        raise StorageFault(f"cannot use database {display(url)}: {exc}") from None
    except DB_ERRORS as exc:
        conn.close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageFault(f"cannot use database {display(url)}: {first}") from None


def _why(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"the file is corrupt or not an SQLite database ({text})"
    if "locked" in text or "busy" in text:
        return "it is locked by another program"
    if "readonly" in text or "unable to open" in text or "disk I/O" in text:
        parent = Path(path).absolute().parent
        if not parent.is_dir():
            reason = "its directory does not exist or is not a directory"
        elif not os.access(parent, os.W_OK):
            reason = "its directory is not writable"
        else:
            reason = "the file or its directory is not writable"
        return f"{reason} ({text})"
    return text
