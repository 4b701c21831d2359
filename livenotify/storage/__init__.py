"""Storage: the server's side of the SQLite writer process.

- :mod:`.bridge`: :class:`StorageBridge`, the facade the server uses.
- :mod:`.backlog`: sequence numbers, acknowledgements, read-your-writes (pure).
- :mod:`.process`: starting, restarting and reaping the writer process.
- :mod:`.errors`: :class:`StorageError`, :class:`StorageBusy`.
"""

from storage_proc.database import lock_path

from .bridge import BACKLOG_LIMIT, BATCH_MS, BATCH_SIZE, IN_FLIGHT_LIMIT, MailJob, StorageBridge
from .errors import StorageBusy, StorageError

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
