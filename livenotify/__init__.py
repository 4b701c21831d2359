"""livenotify: a live notification server on Trio.

The public surface for other Python applications is small: :class:`Publisher`
publishes notifications; :func:`serve` and :class:`Config` embed a server.
"""

from .config import Config, Limits, SlowPolicy
from .publisher import Publisher, PublishError
from .server import serve

__all__ = ["Config", "Limits", "PublishError", "Publisher", "SlowPolicy", "serve"]
__version__ = "0.1.0"
