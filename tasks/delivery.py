"""Hand a composed e-mail to SMTP, or write it to the outbox folder.

Failures come out as one of two exceptions: :class:`TransientFailure` (try
again later: connection refused, timeouts, 4xx replies, authentication)
and :class:`PermanentFailure` (the server refused this recipient or message
for good: 5xx to RCPT or DATA). Authentication and sender errors count as
transient on purpose: they are configuration mistakes an operator fixes,
after which the retried mail should go out.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

from .settings import MailSettings

log = logging.getLogger(__name__)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


class DeliveryFailure(Exception):
    """The mail was not accepted."""


class TransientFailure(DeliveryFailure):
    """Worth retrying later."""


class PermanentFailure(DeliveryFailure):
    """Retrying cannot help."""


def _is_permanent(exc: smtplib.SMTPException) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(code >= 500 for code in codes)
    if isinstance(exc, smtplib.SMTPDataError):
        return exc.smtp_code >= 500
    return False


def send_smtp(msg: EmailMessage, recipient: str, settings: MailSettings) -> None:
    """One SMTP conversation delivering ``msg`` to ``recipient`` only."""
    assert settings.smtp_host is not None
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            # Explicit envelope: the recipients are exactly [recipient],
            # whatever headers the message carries.
            smtp.send_message(msg, from_addr=settings.mail_from, to_addrs=[recipient])
    except smtplib.SMTPException as exc:
        if _is_permanent(exc):
            raise PermanentFailure(_describe(exc)) from exc
        raise TransientFailure(_describe(exc)) from exc
    except (OSError, ssl.SSLError) as exc:  # refused, unreachable, timeout
        raise TransientFailure(f"{settings.smtp_host}:{settings.smtp_port}: {exc}") from exc


def _describe(exc: smtplib.SMTPException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"{code} {text.decode(errors='replace')}" for code, text in exc.recipients.values()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        return f"{exc.smtp_code} {text}"
    return str(exc) or type(exc).__name__


def write_eml(msg: EmailMessage, folder: Path, notification_id: str, key: str) -> Path:
    """Write ``msg`` to ``folder`` atomically; the same mail always gets the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{_UNSAFE_NAME.sub('_', notification_id)[:64]}-{key[:12]}.eml"
    final = folder / name
    tmp = folder / f".{name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(msg))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        raise TransientFailure(f"cannot write {final}: {exc}") from exc
    return final
