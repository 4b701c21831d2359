"""Storage exceptions::

Exception
├── StorageError   the database cannot be used (raised by run() before
│                  started(): corrupt, locked, unwritable, newer schema)
└── StorageBusy    a write or read the store cannot take right now (the
                   backlog is full, the writer is down or did not
                   answer in time); the client's ``storage_busy``
"""

from __future__ import annotations


class StorageError(Exception):
    """The database cannot be used; ``str()`` is one line for the operator."""


class StorageBusy(Exception):
    """The store cannot take this write (or answer this read) right now."""


__all__ = ["StorageBusy", "StorageError"]
