"""The web page served at ``GET /``: static files (package data) and the
headers, a strict Content-Security-Policy among them, to serve them with."""

from livenotify.web.page import (
    PAGE_MARKER,
    PATHS,
    Asset,
    asset,
    content_security_policy,
    policy_headers,
    response_headers,
)

__all__ = [
    "PAGE_MARKER",
    "PATHS",
    "Asset",
    "asset",
    "content_security_policy",
    "policy_headers",
    "response_headers",
]
