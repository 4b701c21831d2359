"""The files of the web page and the headers to serve them with.

The page (``static/index.html``, ``app.js``, ``style.css``) ships as package
data and is read with :mod:`importlib.resources`, so it works from a wheel, a
zip or a checkout alike. Nothing here does I/O on sockets: the HTTP front
door asks :func:`asset` for a request path and sends :func:`response_headers`.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final

#: A string only the page's HTML contains: how a test (or a health check)
#: tells the page apart from any other answer on ``GET /``.
PAGE_MARKER: Final = '<meta name="livenotify-page"'

# Request path -> (file under static/, Content-Type).
_ROUTES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}

#: Request paths the page is made of (what the front door routes here).
PATHS: Final = frozenset(_ROUTES)

# A Host header value that may go into the policy as is: a name or an IPv6
# literal, an optional port. Anything else (";", spaces, quotes) could add
# directives, so it is never copied into the header.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# One CSP source expression: no separators, no spaces, no quotes but the
# keyword form ('self').
_SOURCE = re.compile(r"'[a-z-]+'|[A-Za-z0-9.*:/\[\]-]+")


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page: its bytes and the Content-Type to send them with."""

    name: str
    body: bytes
    content_type: str


@functools.cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def asset(path: str) -> Asset | None:
    """The page file for a request target (``/``, ``/app.js``, ``/?server=x``),
    or ``None`` when the path is not part of the page."""
    route = _ROUTES.get(urllib.parse.urlsplit(path).path)
    if route is None:
        return None
    name, content_type = route
    return Asset(name, _read(name), content_type)


def content_security_policy(host: str | None = None, *, extra_connect: Sequence[str] = ()) -> str:
    """The page's Content-Security-Policy header value.

    Scripts and styles come only from the page's own origin (no inline code,
    no ``eval``); nothing may frame it. ``connect-src`` allows the page's
    WebSocket and publish requests: ``ws://host`` and ``wss://host`` when the
    request's ``host`` (its Host header) is given and well formed, any
    ``ws:``/``wss:`` otherwise. ``extra_connect`` adds sources (a development
    server that points the page at another port with ``?server=``).
    """
    connect = ["'self'"]
    if host is not None and _HOST.fullmatch(host):
        connect += [f"ws://{host}", f"wss://{host}"]
    else:
        connect += ["ws:", "wss:"]
    for source in extra_connect:
        if not _SOURCE.fullmatch(source):
            raise ValueError(f"not a CSP source expression: {source!r}")
        connect.append(source)
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src " + " ".join(connect),
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def policy_headers(
    host: str | None = None, *, extra_connect: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """The headers every page file is sent with, besides its type and length:
    the policy and the usual hardening (no sniffing, no referrer, revalidate
    on load so an upgraded server never runs yesterday's script)."""
    return [
        ("Content-Security-Policy", content_security_policy(host, extra_connect=extra_connect)),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cache-Control", "no-cache"),
    ]


def response_headers(
    item: Asset, *, host: str | None = None, extra_connect: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """All headers of a 200 answer carrying ``item``: its type and length,
    then :func:`policy_headers`."""
    return [
        ("Content-Type", item.content_type),
        ("Content-Length", str(len(item.body))),
        *policy_headers(host, extra_connect=extra_connect),
    ]
