"""One notification, one recipient -> one e-mail (pure, no I/O).

The subject and body come from the notification object ``{"type": EV, ...}``:
``message`` (console ``send``), ``data`` (``publish``) or any other fields
(the seed form, e.g. ``furniture``), rendered as indented ``key: value``
lines. The mail is UTF-8 plain text with an HTML alternative.

Nothing in a notification can add a header: the subject is folded to one
line with every control and line-separator character replaced, the HTML part
is escaped, and the message is built with a policy that refuses CR or LF in
any header value (so an invalid address fails instead of injecting).
"""

from __future__ import annotations

import email.policy
import html
import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

#: Subject length in characters; RFC 5322 recommends lines under 78, and a
#: subject longer than this is unreadable in any mail client anyway.
SUBJECT_MAX = 120
#: Fields the server adds to every notification: id and time go in the footer,
#: the log position (offset, epoch) is bookkeeping, not content.
_META = ("type", "id", "timestamp", "offset", "epoch")
#: Unicode categories that must never reach a header: controls (CR, LF, NUL,
#: ESC...) and the line/paragraph separators some clients treat as breaks.
_BREAKING = frozenset(("Cc", "Zl", "Zp"))
_SPACES = re.compile(r"\s+")

#: The SMTP policy (CRLF line ends) refuses CR/LF in header values.
POLICY = email.policy.SMTP


class ComposeError(ValueError):
    """This notification cannot be turned into a safe e-mail."""


class InvalidAddress(ComposeError):
    """The recipient or sender address cannot be used in a header."""


def one_line(text: str, limit: int = SUBJECT_MAX) -> str:
    """``text`` as a single header-safe line of at most ``limit`` characters."""
    cleaned = "".join(" " if unicodedata.category(c) in _BREAKING else c for c in text)
    cleaned = _SPACES.sub(" ", cleaned).strip()
    # The email package decodes RFC 2047 encoded words in a header value it
    # is given, so "=?utf-8?q?=0D=0ABcc:...?=" would come back as a line
    # break and a new header (Python < 3.11.10 even writes it out). A space
    # keeps the text readable and no longer an encoded word.
    cleaned = cleaned.replace("=?", "= ?")
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def _body_text(text: str) -> str:
    """Body text keeps line breaks and tabs, loses other control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        c if c in "\n\t" or unicodedata.category(c) not in _BREAKING else " " for c in text
    )


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def render_fields(value: Any, indent: int = 0) -> list[str]:
    """Nested JSON as readable ``key: value`` / ``- item`` lines."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(render_fields(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping | list) and item:
                lines.append(f"{pad}-")
                lines.extend(render_fields(item, indent + 1))
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


def _leaves(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in _leaves(v, f"{k}")]
    if isinstance(value, list):
        shown = "[" + ", ".join(_scalar(v) for v in value) + "]"
        return [f"{prefix}={shown}" if prefix else shown]
    return [f"{prefix}={_scalar(value)}" if prefix else _scalar(value)]


def _html_fields(value: Any) -> str:
    if isinstance(value, Mapping):
        items = "".join(
            f"<dt>{html.escape(str(k))}</dt><dd>{_html_fields(v)}</dd>" for k, v in value.items()
        )
        return f"<dl>{items}</dl>"
    if isinstance(value, list):
        return "<ul>" + "".join(f"<li>{_html_fields(v)}</li>" for v in value) + "</ul>"
    return html.escape(_scalar(value))


def _set_text_header(msg: EmailMessage, name: str, value: str) -> None:
    """Set a free-text header, and check the email package kept it verbatim."""
    msg[name] = value
    stored = str(msg[name])
    if stored != value or "\n" in stored or "\r" in stored:
        # Defence in depth: whatever the email package reinterpreted, the
        # mail must not go out with it.
        raise ComposeError(f"{name} header would not be stored verbatim")


def parse_notification(payload: str) -> dict[str, Any]:
    """The notification object; a payload that is not an object is kept as text."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return {"message": payload}
    return obj if isinstance(obj, dict) else {"data": obj}


def subject_for(event: str, fields: Mapping[str, Any]) -> str:
    """``[event] summary``: the message, else the first few field values."""
    message = fields.get("message")
    if isinstance(message, str) and message.strip():
        summary = message
    else:
        details = {k: v for k, v in fields.items() if k not in _META}
        summary = ", ".join(_leaves(details)[:4])
    return one_line(f"[{event}] {summary}" if summary.strip() else f"[{event}] notification")


def compose(
    *,
    event: str,
    payload: str,
    recipient: str,
    sender: str,
    notification_id: str,
) -> EmailMessage:
    """The e-mail for one notification to one recipient.

    Raises ComposeError (InvalidAddress) when ``recipient`` or ``sender`` is
    not a usable address (including any attempt to smuggle a line break into
    one), or a header would not be stored as given.
    """
    fields = parse_notification(payload)
    try:
        to = Address(addr_spec=recipient)
        sender_address = Address(addr_spec=sender)
    except (ValueError, IndexError) as exc:  # email.errors defects are ValueErrors
        raise InvalidAddress(f"unusable address: {exc}") from None

    msg = EmailMessage(policy=POLICY)
    try:
        msg["From"] = sender_address
        msg["To"] = to
    except ValueError as exc:
        raise InvalidAddress(f"unusable address: {exc}") from None
    _set_text_header(msg, "Subject", subject_for(event, fields))
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid("livenotify", domain=sender_address.domain or None)
    _set_text_header(msg, "X-Livenotify-Event", one_line(event))
    _set_text_header(msg, "X-Livenotify-Id", one_line(notification_id))

    message = fields.get("message")
    details = {k: v for k, v in fields.items() if k not in _META and k != "message"}
    when = fields.get("timestamp")
    footer = f"event {event}, id {notification_id}" + (f", {when}" if isinstance(when, str) else "")

    text_parts = [f"Notification: {event}", ""]
    html_parts = [f"<h2>{html.escape(event)}</h2>"]
    if isinstance(message, str):
        text_parts += [_body_text(message), ""]
        html_parts.append("<p>" + html.escape(_body_text(message)).replace("\n", "<br>\n") + "</p>")
    elif message is not None:
        details = {"message": message, **details}
    if details:
        text_parts += [*render_fields(details), ""]
        html_parts.append(_html_fields(details))
    text_parts += ["--", _body_text(footer)]
    html_parts.append(f'<p style="color:#666">{html.escape(_body_text(footer))}</p>')

    # quoted-printable: 7-bit safe for any SMTP server, readable in raw form.
    msg.set_content("\n".join(text_parts) + "\n", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
        + "\n".join(html_parts)
        + "\n</body></html>\n",
        subtype="html",
        charset="utf-8",
    )
    return msg
