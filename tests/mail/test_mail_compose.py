"""Mail content: subject and body from the notification, UTF-8 text plus an
escaped HTML alternative, and no way for notification text to add headers."""

from __future__ import annotations

import email
import email.policy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.compose import SUBJECT_MAX, InvalidAddress, compose, one_line, render_fields

HEADERS = {
    "From", "To", "Subject", "Date", "Message-ID", "X-Livenotify-Event", "X-Livenotify-Id",
    "MIME-Version", "Content-Type",
}  # fmt: skip


def build(
    fields: dict[str, Any], event: str = "furniture_created", to: str = "ana@example.com"
) -> Any:
    msg = compose(
        event=event,
        payload=json.dumps({"type": event, "id": "n1", "timestamp": "2024-01-15T14:30:00.000Z",
                            **fields}),
        recipient=to,
        sender="alerts@livenotify.test",
        notification_id="n1",
    )  # fmt: skip
    return email.message_from_bytes(bytes(msg), policy=email.policy.default)


def bodies(parsed: Any) -> tuple[str, str]:
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = parsed.get_body(("html",)).get_content().replace("\r\n", "\n")
    return text, html


def test_console_message_is_subject_and_body() -> None:
    parsed = build({"message": "Sofá nuevo en el catálogo"})
    assert parsed["Subject"] == "[furniture_created] Sofá nuevo en el catálogo"
    assert parsed["From"] == "alerts@livenotify.test"
    assert parsed["To"] == "ana@example.com"
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = bodies(parsed)
    assert "Sofá nuevo en el catálogo" in text
    assert "Sofá nuevo en el catálogo" in html
    assert "2024-01-15T14:30:00.000Z" in text


def test_seed_form_fields_render_readably() -> None:
    parsed = build({"furniture": {"id": 3, "name": "Mesa", "tags": ["oak", "round"],
                                  "price": 99.5, "stock": None}})  # fmt: skip
    assert parsed["Subject"] == "[furniture_created] id=3, name=Mesa, tags=[oak, round], price=99.5"
    text, html = bodies(parsed)
    assert "furniture:\n  id: 3\n  name: Mesa\n  tags:\n    - oak\n    - round\n" in text
    assert "  price: 99.5\n  stock: null\n" in text
    assert "<dt>name</dt><dd>Mesa</dd>" in html


def test_publish_data_renders() -> None:
    _, html = bodies(build({"data": {"a": 1}}))
    text, _ = bodies(build({"data": "plain text data"}))
    assert "<dt>data</dt><dd><dl><dt>a</dt><dd>1</dd></dl></dd>" in html
    assert "data: plain text data" in text


def test_html_alternative_is_escaped() -> None:
    parsed = build({"message": "<script>alert(1)</script>", "x": {"<b>": "<i>&"}})
    _, html = bodies(parsed)
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<dt>&lt;b&gt;</dt><dd>&lt;i&gt;&amp;</dd>" in html


@pytest.mark.parametrize(
    "text",
    [
        "hi\r\nBcc: x@evil.test",
        "hi\nBcc: x@evil.test",
        "hi\rBcc: x@evil.test",
        "hi\u2028Bcc: x@evil.test",
        "hi\x00\x1b[31m\x85Bcc: x@evil.test",
        "=?utf-8?q?hi=0D=0ABcc=3A_x=40evil.test?=",
    ],
)
def test_header_injection_in_message_is_folded_into_the_subject(text: str) -> None:
    parsed = build({"message": text})
    assert set(parsed.keys()) == HEADERS
    assert parsed["Bcc"] is None
    assert "\n" not in parsed["Subject"] and "\r" not in parsed["Subject"]


@pytest.mark.parametrize(
    "address", ["ana@example.com\r\nBcc: x@evil.test", "ana@example.com\nCc: x@e.t", "", "no-at",
                "José@example.com"],
)  # fmt: skip
def test_unusable_recipient_is_refused(address: str) -> None:
    with pytest.raises(InvalidAddress):
        build({"message": "hi"}, to=address)


def test_event_name_cannot_inject_either() -> None:
    parsed = build({"message": "hi"}, event="ev\r\nBcc: x@evil.test")
    assert set(parsed.keys()) == HEADERS
    assert parsed["X-Livenotify-Event"] == "ev Bcc: x@evil.test"


def test_one_line_limits_length_and_whitespace() -> None:
    assert one_line("  a\t\tb \r\n c  ") == "a b c"
    long = one_line("x" * 500)
    assert len(long) == SUBJECT_MAX and long.endswith("…")


def test_render_fields_nesting() -> None:
    assert render_fields({"a": [{"b": 1}], "c": {}}) == ["a:", "  -", "    b: 1", "c: {}"]


def test_non_object_payload_is_still_mailed() -> None:
    msg = compose(event="e", payload="not json", recipient="a@b.test", sender="s@b.test",
                  notification_id="n")  # fmt: skip
    assert msg["Subject"] == "[e] not json"


@settings(max_examples=150, deadline=None)
@given(message=st.text(max_size=300), key=st.text(min_size=1, max_size=20), value=st.text())
def test_no_notification_text_adds_a_header(message: str, key: str, value: str) -> None:
    parsed = build({"message": message, key: value})
    assert set(parsed.keys()) == HEADERS
    for name in HEADERS:
        assert len(parsed.get_all(name) or []) == 1
