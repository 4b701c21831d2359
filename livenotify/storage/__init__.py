"""Storage: the server's side of the SQLite writer process.

- :mod:`.bridge`: :class:`StorageBridge`, the facade the server uses.
- :mod:`.backlog`: sequence numbers, acknowledgements, read-your-writes (pure).
- :mod:`.process`: starting, restarting and reaping the writer process.
- :mod:`.reads`: reads waiting for the writer's answer.
- :mod:`.writes`: mail jobs, argument checks, time stamps; :mod:`.limits`.
- :mod:`.errors`: :class:`StorageError`, :class:`StorageBusy`.
"""

from storage_proc.database import lock_path
from storage_proc.pg import display as display_db

from .bridge import StorageBridge
from .errors import StorageBusy, StorageError
from .limits import BACKLOG_LIMIT, BATCH_MS, BATCH_SIZE, IN_FLIGHT_LIMIT
from .writes import MailJob

__all__ = [
    "BACKLOG_LIMIT",
    "BATCH_MS",
    "BATCH_SIZE",
    "IN_FLIGHT_LIMIT",
    "MailJob",
    "StorageBridge",
    "StorageBusy",
    "StorageError",
    "display_db",
    "lock_path",
]
