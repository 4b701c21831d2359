"""livenotify: a live notification server on Trio.

The public surface for other Python applications is small: :class:`Publisher`
publishes notifications; :func:`serve` and :class:`Config` embed a server.

The face is lazy (PEP 562): ``from livenotify import Publisher`` (what a
Django app does) loads the standard library only, not Trio, trio-websocket,
storage or mail. Each name is imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, Limits, SlowPolicy
    from .publisher import Publisher, PublishError
    from .server import serve

__all__ = ["Config", "Limits", "PublishError", "Publisher", "SlowPolicy", "serve"]
__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_LAZY: dict[str, str] = {
    "Config": ".config",
    "Limits": ".config",
    "SlowPolicy": ".config",
    "Publisher": ".publisher",
    "PublishError": ".publisher",
    "serve": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
