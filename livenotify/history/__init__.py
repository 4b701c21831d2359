"""The notification log: positions, history, replay (DESIGN "Positions and history").

- :mod:`.positions`: :class:`Position`, :class:`Since` and their text forms (pure).
- :mod:`.log`: the :class:`NotificationLog` interface, :class:`LogEntry`, :class:`Replay`.
- :mod:`.embedded`: :class:`EmbeddedLog`, kept by the SQLite writer process
  with the recent tail in memory.
- :mod:`.memory`: :class:`MemoryLog`, for a hub without storage.
"""

from .embedded import EmbeddedLog
from .log import HistoryBusy, LogEntry, NotificationLog, Replay
from .memory import MemoryLog
from .positions import ALL, InvalidPosition, Position, Since, parse_position, parse_since

__all__ = [
    "ALL",
    "EmbeddedLog",
    "HistoryBusy",
    "InvalidPosition",
    "LogEntry",
    "MemoryLog",
    "NotificationLog",
    "Position",
    "Replay",
    "Since",
    "parse_position",
    "parse_since",
]
