"""Transports only frame: each turns a connection into text messages in and
raw framed bytes out, behind the same small interface, so the
:class:`~livenotify.session.Session` is written once for both."""

from .base import Transport, TransportClosed
from .tcp import TcpTransport
from .ws import WsTransport

__all__ = ["TcpTransport", "Transport", "TransportClosed", "WsTransport"]
