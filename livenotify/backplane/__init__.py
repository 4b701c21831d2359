"""The backplane: offsets, ordering and fan-out of publishes (see :mod:`.base`).

- :mod:`.base`: the :class:`Backplane` protocol, :class:`Sent`,
  :class:`BackendUnavailable`, :func:`encode_notification`.
- :mod:`.local`: :class:`LocalBackplane`, one process over the embedded log.
"""

from .base import BackendUnavailable, Backplane, Deliver, Sent, encode_notification
from .local import LocalBackplane

__all__ = [
    "BackendUnavailable",
    "Backplane",
    "Deliver",
    "LocalBackplane",
    "Sent",
    "encode_notification",
]
