"""The page's files and headers (``livenotify.web``), without a browser."""

from __future__ import annotations

import re

import pytest

from livenotify import web


@pytest.mark.parametrize(
    ("path", "name", "kind"),
    [
        ("/", "index.html", "text/html"),
        ("/?server=127.0.0.1:8765", "index.html", "text/html"),
        ("/index.html", "index.html", "text/html"),
        ("/app.js", "app.js", "text/javascript"),
        ("/style.css", "style.css", "text/css"),
    ],
)
def test_each_path_of_the_page_has_its_file_and_type(path: str, name: str, kind: str) -> None:
    item = web.asset(path)
    assert item is not None and item.name == name
    assert item.content_type == f"{kind}; charset=utf-8"
    assert item.body  # read from package data, not empty
    assert path.split("?")[0] in web.PATHS


@pytest.mark.parametrize("path", ["/publish/x", "/static/app.js", "/../pyproject.toml", "/app.js/"])
def test_other_paths_are_not_the_page(path: str) -> None:
    assert web.asset(path) is None


def test_the_html_has_the_marker_and_no_inline_code() -> None:
    item = web.asset("/")
    assert item is not None
    html = item.body.decode()
    assert web.PAGE_MARKER in html
    # Every <script> has a src and no body; no style element or attribute;
    # no on* handler attributes: the policy would block them anyway.
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="./app.js">']
    assert '<script type="module" src="./app.js"></script>' in html
    assert "<style" not in html and not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)


def test_the_script_never_writes_html() -> None:
    item = web.asset("/app.js")
    assert item is not None
    code = "\n".join(
        line for line in item.body.decode().splitlines() if not line.lstrip().startswith("//")
    )
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code


def test_the_policy_is_strict_and_names_the_host() -> None:
    policy = web.content_security_policy("example.com:8765")
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "connect-src": "'self' ws://example.com:8765 wss://example.com:8765",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    assert "ws://[::1]:8765" in web.content_security_policy("[::1]:8765")


@pytest.mark.parametrize("host", [None, "", "evil; script-src *", "a b", "x'y", "h:port"])
def test_a_missing_or_odd_host_never_reaches_the_header(host: str | None) -> None:
    policy = web.content_security_policy(host)
    assert "connect-src 'self' ws: wss:;" in policy
    assert policy.count(";") == 7  # eight directives, none injected
    if host:
        assert host not in policy


def test_extra_sources_are_checked() -> None:
    assert "http://127.0.0.1:*" in web.content_security_policy(extra_connect=["http://127.0.0.1:*"])
    with pytest.raises(ValueError, match="CSP source"):
        web.content_security_policy(extra_connect=["x; script-src *"])


def test_response_headers() -> None:
    item = web.asset("/app.js")
    assert item is not None
    headers = dict(web.response_headers(item, host="localhost:8765"))
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Content-Length"] == str(len(item.body))
    assert headers["Content-Security-Policy"] == web.content_security_policy("localhost:8765")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
