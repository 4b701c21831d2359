"""The ``livenotify.send_mail`` task: one notification to one recipient.

The job is a JSON object ``{"notification_id", "event", "email", "payload",
"outbox_id"}`` (``payload`` is the notification's JSON text). The task:

1. claims the idempotency key (see :mod:`tasks.claims`); a key already
   "sent" ends the task, a key another worker is sending is retried later;
2. composes the mail and sends it (SMTP, or an ``.eml`` file without SMTP);
3. records "sent" only after SMTP accepted the mail;
4. on a transient failure releases the claim and retries with exponential
   backoff and jitter; after ``max_retries`` it gives up with an ERROR line.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task

from .celery_app import SEND_MAIL, is_redis
from .claims import AlreadySent, Busy, ClaimStore, FileClaims, RedisClaims, idempotency_key
from .compose import ComposeError, compose
from .confirmation import compose_confirmation
from .delivery import PermanentFailure, TransientFailure, send_smtp, write_eml
from .settings import MailSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MailJob:
    """One mail to send, as the dispatcher hands it over."""

    notification_id: str
    event: str
    email: str
    payload: str
    outbox_id: int | None = None
    #: ``notify`` (a notification) or ``confirm`` (double opt-in's
    #: confirmation mail; ``payload`` holds its code and link).
    kind: str = "notify"

    @classmethod
    def from_json(cls, obj: Any) -> MailJob:
        """Validate a task argument; raise ValueError naming what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("job is not an object")
        for name in ("notification_id", "event", "email", "payload"):
            if not isinstance(obj.get(name), str):
                raise ValueError(f"job field {name!r} missing or not a string")
        outbox_id = obj.get("outbox_id")
        kind = obj.get("kind", "notify")
        if kind not in ("notify", "confirm"):
            raise ValueError(f"job kind {kind!r} unknown")
        return cls(
            obj["notification_id"],
            obj["event"],
            obj["email"],
            obj["payload"],
            outbox_id if isinstance(outbox_id, int) else None,
            kind,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "event": self.event,
            "email": self.email,
            "payload": self.payload,
            "outbox_id": self.outbox_id,
            "kind": self.kind,
        }

    @property
    def key(self) -> str:
        return idempotency_key(self.notification_id, self.email)


def backoff(settings: MailSettings, retries: int) -> float:
    """Seconds before retry number ``retries + 1``: exponential, "equal jitter".

    Half of the exponential step is fixed, half random: retries never come
    back-to-back, and mails that failed together spread out.
    """
    step = min(settings.retry_max_delay, settings.retry_delay * 2.0 ** min(retries, 32))
    return step / 2 + random.uniform(0, step / 2)


def make_claims(settings: MailSettings) -> ClaimStore:
    """Redis claims with a Redis broker, else files under the data dir."""
    if is_redis(settings.broker):
        assert settings.broker is not None
        return RedisClaims.from_url(
            settings.broker,
            claim_ttl=settings.claim_ttl,
            sent_ttl=settings.sent_ttl,
            timeout=settings.smtp_timeout,
        )
    store = FileClaims(settings.data_dir.absolute() / "mail-sent", sent_ttl=settings.sent_ttl)
    store.sweep()
    return store


class Mailer:
    """What the task does, kept apart from Celery so it reads top to bottom."""

    def __init__(self, settings: MailSettings, claims: ClaimStore) -> None:
        self.settings = settings
        self.claims = claims

    def describe(self) -> str:
        s = self.settings
        if s.smtp_host is None:
            return f"no LIVENOTIFY_SMTP_HOST: writing mail to {s.outbox_dir.absolute()}"
        tls = " STARTTLS" if s.smtp_starttls else ""
        auth = f" as {s.smtp_user}" if s.smtp_user else ""
        return f"sending mail via {s.smtp_host}:{s.smtp_port}{tls}{auth} from {s.mail_from}"

    def run(self, task: Task, raw: Any) -> str:
        try:
            job = MailJob.from_json(raw)
        except ValueError as exc:
            log.error("mail task dropped: %s", exc)
            return "invalid"
        retries = int(task.request.retries or 0)
        try:
            state = self.claims.acquire(job.key)
        except Exception as exc:  # the claim store (Redis) is unreachable
            delay = backoff(self.settings, retries)
            log.warning(
                "mail %s to %s: idempotency store: %s; retry in %.1fs",
                job.notification_id,
                job.email,
                exc,
                delay,
            )
            raise task.retry(countdown=delay, max_retries=None) from exc
        if isinstance(state, AlreadySent):
            log.info("mail %s to %s: already sent, skipped", job.notification_id, job.email)
            return "duplicate"
        if isinstance(state, Busy):
            # Not a failure: another worker holds the claim. Look again once
            # it has had time to finish (or its claim lapsed).
            raise task.retry(countdown=state.retry_after + random.uniform(0, 1), max_retries=None)
        try:
            where = self._deliver(job)
        except PermanentFailure as exc:
            state.release()
            log.error("mail %s to %s refused for good: %s", job.notification_id, job.email, exc)
            return "refused"
        except TransientFailure as exc:
            state.release()
            if retries >= self.settings.max_retries:
                log.error(
                    "mail %s to %s: giving up after %d retries: %s",
                    job.notification_id,
                    job.email,
                    retries,
                    exc,
                )
                return "failed"
            delay = backoff(self.settings, retries)
            log.warning(
                "mail %s to %s failed (%s); retry %d in %.1fs",
                job.notification_id,
                job.email,
                exc,
                retries + 1,
                delay,
            )
            raise task.retry(countdown=delay, max_retries=None) from exc
        except BaseException:
            state.release()
            raise
        state.mark_sent()
        log.info("mail %s (%s) to %s: %s", job.notification_id, job.event, job.email, where)
        return "sent"

    def _deliver(self, job: MailJob) -> str:
        s = self.settings
        try:
            if job.kind == "confirm":
                msg = compose_confirmation(
                    payload=job.payload, recipient=job.email, sender=s.mail_from
                )
            else:
                msg = compose(
                    event=job.event,
                    payload=job.payload,
                    recipient=job.email,
                    sender=s.mail_from,
                    notification_id=job.notification_id,
                )
        except ComposeError as exc:
            raise PermanentFailure(str(exc)) from exc
        if s.smtp_host is None:
            path = write_eml(msg, s.outbox_dir, job.notification_id, job.key)
            return f"written to {path}"
        send_smtp(msg, job.email, s)
        return f"sent via {s.smtp_host}:{s.smtp_port}"


def register(app: Celery, settings: MailSettings) -> tuple[Task, Mailer]:
    """Define the ``livenotify.send_mail`` task on ``app``."""
    mailer = Mailer(settings, make_claims(settings))

    @app.task(name=SEND_MAIL, bind=True, max_retries=None, acks_late=True)  # type: ignore[untyped-decorator]
    def send_mail(self: Task, job: Any) -> str:
        return mailer.run(self, job)

    return send_mail, mailer
