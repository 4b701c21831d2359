"""The confirmation mail of double opt-in (pure, no I/O).

The job's payload is ``{"code": C, "link": URL}``: the mail asks the
recipient to send ``confirm C`` (TCP) or open the link. Plain text only,
with the code on a line of its own so it can be copied. An address that
did not ask gets one such mail and never another notification.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from .compose import POLICY, ComposeError, InvalidAddress

SUBJECT = "Confirm your livenotify e-mail notifications"
# What the server makes (secrets.token_urlsafe) and a link it built.
_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LINK = re.compile(r"https?://[^\s<>\"']{1,2000}")


def compose_confirmation(*, payload: str, recipient: str, sender: str) -> EmailMessage:
    """The confirmation mail for ``recipient``; ComposeError for a bad job."""
    try:
        obj = json.loads(payload)
    except ValueError as exc:
        raise ComposeError(f"confirmation payload is not JSON: {exc}") from None
    code = obj.get("code") if isinstance(obj, dict) else None
    link = obj.get("link") if isinstance(obj, dict) else None
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise ComposeError("confirmation payload has no valid code")
    if not isinstance(link, str) or not _LINK.fullmatch(link):
        raise ComposeError("confirmation payload has no valid link")
    try:
        to = Address(addr_spec=recipient)
        sender_address = Address(addr_spec=sender)
    except (ValueError, IndexError) as exc:
        raise InvalidAddress(f"unusable address: {exc}") from None
    msg = EmailMessage(policy=POLICY)
    try:
        msg["From"] = sender_address
        msg["To"] = to
    except ValueError as exc:
        raise InvalidAddress(f"unusable address: {exc}") from None
    msg["Subject"] = SUBJECT
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid("livenotify", domain=sender_address.domain or None)
    msg["X-Livenotify-Confirm"] = code
    body = (
        "Someone (hopefully you) asked to receive livenotify notifications\n"
        f"at {recipient}.\n\n"
        "To confirm, open this link:\n\n"
        f"    {link}\n\n"
        "or send this command over a livenotify connection:\n\n"
        f"    confirm {code}\n\n"
        "If you did not ask for this, ignore this mail: without a\n"
        "confirmation you will get no notifications.\n"
    )
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg
