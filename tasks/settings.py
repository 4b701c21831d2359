"""The worker's settings, read once from ``LIVENOTIFY_*`` environment variables.

The worker is started by ``celery -A tasks worker``, so the environment is the
only channel through which it can be told anything. Every value has a default
that works on a bare machine: no broker means the embedded filesystem broker
under the data dir, no SMTP host means mail is written as ``.eml`` files to
``<data_dir>/outbox/`` instead of being sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Default data dir; the same default as ``livenotify serve --data-dir``.
DEFAULT_DATA_DIR = "livenotify-data"


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use."""


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class MailSettings:
    """Everything the e-mail worker needs to know."""

    #: Celery broker URL; ``None`` is the embedded filesystem broker.
    broker: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    #: ``None``: no SMTP, mail goes to ``<data_dir>/outbox/*.eml``.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    #: Seconds one SMTP socket operation may take; a stuck server must not
    #: hold the worker (and the idempotency claim) for long.
    smtp_timeout: float = 30.0
    mail_from: str = "livenotify@localhost"
    #: Exponential backoff on SMTP failure: ``random(0, delay * 2**retries)``
    #: capped at ``retry_max_delay`` ("full jitter", so retries of many mails
    #: after an outage do not arrive at the server together).
    retry_delay: float = 5.0
    retry_max_delay: float = 600.0
    #: About three hours of retries at the default delays before a mail is
    #: given up (logged as an ERROR).
    max_retries: int = 25
    #: Seconds a "sending" claim lives in Redis: well above one SMTP
    #: conversation (a few ``smtp_timeout`` operations), so a live sender keeps
    #: its claim, yet a crashed one blocks a retry for five minutes at most.
    claim_ttl: int = 300
    #: Seconds a "sent" marker is kept: longer than any redelivery we expect
    #: (Redis visibility timeout, retries), short enough to not grow forever.
    sent_ttl: int = 7 * 24 * 3600

    @property
    def outbox_dir(self) -> Path:
        """Where mail is written when no SMTP host is configured."""
        return self.data_dir / "outbox"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MailSettings:
        """Read the ``LIVENOTIFY_*`` variables; raise SettingsError naming a bad one."""
        env = os.environ if env is None else env
        d = cls()

        def get(name: str, default: T, convert: Callable[[str], T]) -> T:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return convert(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a valid value") from None

        def text(name: str) -> str | None:
            return env.get(name, "").strip() or None

        return cls(
            broker=text("LIVENOTIFY_BROKER"),
            data_dir=Path(get("LIVENOTIFY_DATA_DIR", str(d.data_dir), str)),
            smtp_host=text("LIVENOTIFY_SMTP_HOST"),
            smtp_port=get("LIVENOTIFY_SMTP_PORT", d.smtp_port, int),
            smtp_user=text("LIVENOTIFY_SMTP_USER"),
            # The password is taken verbatim: spaces may be part of it.
            smtp_password=env.get("LIVENOTIFY_SMTP_PASSWORD") or None,
            smtp_starttls=_truthy(env.get("LIVENOTIFY_SMTP_STARTTLS", "0")),
            smtp_timeout=get("LIVENOTIFY_SMTP_TIMEOUT", d.smtp_timeout, float),
            mail_from=get("LIVENOTIFY_MAIL_FROM", d.mail_from, str),
            retry_delay=get("LIVENOTIFY_MAIL_RETRY_DELAY", d.retry_delay, float),
            retry_max_delay=get("LIVENOTIFY_MAIL_RETRY_MAX_DELAY", d.retry_max_delay, float),
            max_retries=get("LIVENOTIFY_MAIL_MAX_RETRIES", d.max_retries, int),
        )
