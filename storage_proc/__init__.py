"""The SQLite writer process and what it shares with the server's bridge.

Only the stdlib is imported here: the writer is a ``spawn`` child and should
start in a fraction of a second.

- :mod:`storage_proc.schema`: tables and forward migrations.
- :mod:`storage_proc.ops`: the writes and how each is applied (idempotently).
- :mod:`storage_proc.wire`: the messages and framing on the socket pair.
- :mod:`storage_proc.database`: validation, pragmas, lock file.
- :mod:`storage_proc.queries`: the reads the writer answers for the server.
- :mod:`storage_proc.history`: the notification log's epoch and retention.
- :mod:`storage_proc.writer`: the process's main loop (batching, acks).
- :mod:`storage_proc.__main__`: ``python -m storage_proc``, how it starts.
"""

from .database import DatabaseLock, StorageFault
from .schema import SCHEMA_VERSION
from .writer import WriterOptions, writer_main

__all__ = ["SCHEMA_VERSION", "DatabaseLock", "StorageFault", "WriterOptions", "writer_main"]
