"""E-mail hand-off: outbox -> Celery broker.

:class:`MailDispatcher` moves mail jobs from the durable outbox (rows the
storage writer adds for every registered subscriber of a logged
notification) to the Celery broker::

    wait_outbox() -> pending_mail(limit) -> [bounded channel] -> hand-off thread
        -> send_task("livenotify.send_mail") -> mark_mail_queued(accepted ids)

The publish runs in one dedicated thread, never on the Trio thread, so a slow
or dead broker cannot stall live delivery. A row is marked queued only after
the broker accepted its task; until then it stays pending in the outbox and
is handed over again (after a broker outage, after a restart). A hand-off
that happens twice (crash between accept and mark) is harmless: the worker's
idempotency key mails each (notification, recipient) once.

A broker outage is logged once as a WARNING, its end once as INFO; in
between the dispatcher retries with exponential backoff and jitter.

Two more things pass through here: confirmation mails (double opt-in, see
:mod:`livenotify.optin`), queued in memory by :meth:`MailDispatcher.submit_confirmation`
and handed over first, as ``livenotify.send_mail`` jobs of kind
``confirm``; and the per-recipient cap (:mod:`.caps`): a row over it is
marked queued without being handed over.
"""

from __future__ import annotations

import json
import logging
import random
import re
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..config import Config
from ..storage import StorageBusy
from .caps import RecipientCap

if TYPE_CHECKING:
    from celery import Celery

# The package's name, not the module's: operators (and their log filters)
# know these lines as "livenotify.mail".
log = logging.getLogger("livenotify.mail")

#: Outbox rows read and handed to the broker per round: large enough that a
#: backlog after an outage drains quickly, small enough that one round (and
#: a shutdown waiting for it) stays short.
HANDOFF_BATCH = 100
#: Seconds between outbox reads when no wake-up came: a safety net, should a
#: wake-up be missed; normally ``wait_outbox()`` returns first.
OUTBOX_POLL = 5.0
#: Seconds before reading the outbox again after storage said it is busy.
STORAGE_RETRY = 1.0
#: Backoff between hand-off attempts while the broker is unreachable.
BROKER_RETRY_MIN = 0.5
BROKER_RETRY_MAX = 30.0
#: Confirmation mails waiting for the broker, at most (in memory: one lost
#: with a restart is asked for again by registering again).
CONFIRM_QUEUE_LIMIT = 10_000


class OutboxJob(Protocol):
    """One outbox row: mail ``notification_id`` to ``email``."""

    @property
    def outbox_id(self) -> int: ...
    @property
    def notification_id(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def payload(self) -> str: ...


class OutboxReader(Protocol):
    """What the dispatcher needs of :class:`~livenotify.storage.StorageBridge`.

    Rows passed to ``mark_mail_queued`` leave ``pending_mail`` at once;
    ``wait_outbox`` returns once rows were added after the latest
    ``pending_mail`` began. Both may raise ``StorageBusy``.
    """

    async def pending_mail(self, limit: int) -> Sequence[OutboxJob]: ...
    def mark_mail_queued(self, outbox_ids: Sequence[int]) -> int: ...
    async def wait_outbox(self) -> None: ...


def confirmation_message(email: str, code: str, link: str) -> dict[str, Any]:
    """The ``livenotify.send_mail`` argument of a confirmation mail: its own
    id per mail (a resend is a new mail), the code and link as payload."""
    return {
        "kind": "confirm",
        "outbox_id": 0,
        "notification_id": f"confirm-{uuid.uuid4().hex}",
        "event": "confirm",
        "email": email,
        "payload": json.dumps({"code": code, "link": link}),
    }


def job_message(job: OutboxJob) -> dict[str, Any]:
    """The JSON argument of the ``livenotify.send_mail`` task."""
    return {
        "outbox_id": job.outbox_id,
        "notification_id": job.notification_id,
        "event": job.event,
        "email": job.email,
        "payload": job.payload,
    }


@dataclass(slots=True)
class HandOff:
    """What the hand-off thread did with one batch."""

    accepted: list[int] = field(default_factory=list)
    #: Why the rest was not accepted; ``None`` if everything was.
    error: str | None = None


def publish_batch(app: Celery, jobs: Sequence[dict[str, Any]]) -> HandOff:
    """Publish ``jobs`` in order, stopping at the first the broker refuses.

    Blocking: runs in the hand-off thread.
    """
    from tasks.celery_app import PUBLISH_RETRY_POLICY, SEND_MAIL

    result = HandOff()
    try:
        with app.producer_or_acquire() as producer:
            for job in jobs:
                app.send_task(
                    SEND_MAIL,
                    args=[job],
                    task_id=f"{job['notification_id']}.{job['outbox_id']}",
                    producer=producer,
                    retry=True,
                    retry_policy=PUBLISH_RETRY_POLICY,
                )
                result.accepted.append(int(job["outbox_id"]))
    # Whatever the transport raises (kombu OperationalError, redis errors,
    # OSError...), the job was not accepted: it stays in the outbox.
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def describe_broker(broker: str | None) -> str:
    """The broker URL without its password, for logs."""
    if broker is None:
        return "embedded"
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", broker)


class MailDispatcher:
    """Hands pending outbox rows to the Celery broker (see the module docstring)."""

    def __init__(
        self, config: Config, storage: OutboxReader, *, batch: int = HANDOFF_BATCH
    ) -> None:
        self.config = config
        self.storage = storage
        self.batch = batch
        #: True between the outage WARNING and the recovery INFO.
        self.broker_down = False
        #: Rows handed to the broker since start.
        self.queued = 0
        #: Hand-off rounds the broker did not (fully) accept.
        self.failed_attempts = 0
        #: Rows handed to the broker that storage could not yet record as
        #: queued; nothing more is handed over until they are recorded.
        self._unrecorded: set[int] = set()
        self._record_refused = False
        self._scope = trio.CancelScope()
        self._confirmations: deque[dict[str, Any]] = deque()
        self._kick = trio.Event()
        #: Confirmation mails handed to the broker since start.
        self.confirmations_queued = 0
        self.cap = RecipientCap(config.mail_burst, config.mail_per_hour)

    @property
    def capped(self) -> int:
        """Notification mails not sent because of the per-recipient cap."""
        return self.cap.capped

    def submit_confirmation(self, email: str, code: str, link: str) -> bool:
        """Queue a confirmation mail for the broker; False when the queue is full."""
        if len(self._confirmations) >= CONFIRM_QUEUE_LIMIT:
            return False
        self._confirmations.append(confirmation_message(email, code, link))
        self._kick.set()
        return True

    def stop(self) -> None:
        """Stop handing over (call before closing storage); pending rows stay."""
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand over mail until cancelled or stopped."""
        requests_send, requests_recv = trio.open_memory_channel[list[dict[str, Any]]](1)
        results_send, results_recv = trio.open_memory_channel[HandOff](1)
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        trio.to_thread.run_sync,
                        self._thread_main,
                        requests_recv,
                        results_send,
                        thread_name="livenotify-mail-handoff",
                        # Shutdown never waits for a publish in progress: its
                        # row is not marked, so it is handed over again.
                        abandon_on_cancel=True,
                    )
                )
                task_status.started()
                log.info("mail dispatcher: broker %s", describe_broker(self.config.broker))
                try:
                    await self._loop(requests_send, results_recv)
                finally:
                    requests_send.close()
                    results_recv.close()

    async def _loop(
        self,
        requests: trio.MemorySendChannel[list[dict[str, Any]]],
        results: trio.MemoryReceiveChannel[HandOff],
    ) -> None:
        delay = BROKER_RETRY_MIN
        while True:
            if self._confirmations:
                batch = [
                    self._confirmations[i] for i in range(min(self.batch, len(self._confirmations)))
                ]
                await requests.send(batch)
                result = await results.receive()
                for _ in result.accepted:
                    self._confirmations.popleft()
                self.confirmations_queued += len(result.accepted)
            else:
                if self._unrecorded and not self._record_queued():
                    # Reading the outbox now would hand the same rows over again.
                    await trio.sleep(STORAGE_RETRY)
                    continue
                try:
                    jobs = await self.storage.pending_mail(self.batch)
                except StorageBusy as exc:
                    # The writer is restarting or storage is closing: look again.
                    log.debug("mail: outbox not readable (%s)", exc)
                    await trio.sleep(STORAGE_RETRY)
                    continue
                if not jobs:
                    await self._wait(OUTBOX_POLL)
                    continue
                allowed = [job for job in jobs if self._allowed(job)]
                if not allowed:
                    self._record_queued()
                    continue
                await requests.send([job_message(job) for job in allowed])
                result = await results.receive()
                for job in allowed[len(result.accepted) :]:
                    self.cap.refund(job.email)
                if result.accepted:
                    self.queued += len(result.accepted)
                    log.info("mail: %d job(s) handed to the broker", len(result.accepted))
                    self._unrecorded.update(result.accepted)
                    self._record_queued()
            if result.error is None:
                if self.broker_down:
                    self.broker_down = False
                    log.info("mail broker reachable again; handing over the outbox")
                delay = BROKER_RETRY_MIN
                continue
            self.failed_attempts += 1
            if not self.broker_down:
                self.broker_down = True
                log.warning(
                    "mail broker unreachable (%s); mail waits in the outbox, retrying",
                    result.error,
                )
            pause = delay * random.uniform(0.5, 1.0)
            log.debug("mail hand-off attempt %d failed; next in %.1fs", self.failed_attempts, pause)
            await trio.sleep(pause)
            delay = min(delay * 2, BROKER_RETRY_MAX)

    def _allowed(self, job: OutboxJob) -> bool:
        """Charge the recipient's cap; a row over it is recorded as handled."""
        if self.cap.take(job.email):
            return True
        self._unrecorded.add(job.outbox_id)
        return False

    async def _wait(self, timeout: float) -> None:
        """Until the outbox grows, a confirmation is submitted, or ``timeout``."""
        kick = self._kick = trio.Event()
        if self._confirmations:
            return

        async def first(wait: Any, scope: trio.CancelScope) -> None:
            await wait()
            scope.cancel()

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first, self.storage.wait_outbox, nursery.cancel_scope)
                nursery.start_soon(first, kick.wait, nursery.cancel_scope)

    def _record_queued(self) -> bool:
        """Record the handed-over rows as queued; False while storage refuses.

        Refused rows are kept here and retried before anything else is read,
        so a stuck writer costs one warning, not a flood of duplicate tasks
        (the worker's idempotency key would keep them from mailing anyone
        twice, but not from filling the broker).
        """
        try:
            self.storage.mark_mail_queued(sorted(self._unrecorded))
        except StorageBusy as exc:
            if not self._record_refused:
                self._record_refused = True
                log.warning(
                    "mail: %d handed-over job(s) not recorded yet (%s); hand-off paused",
                    len(self._unrecorded), exc,
                )  # fmt: skip
            return False
        if self._record_refused:
            self._record_refused = False
            log.info("mail: handed-over jobs recorded; hand-off resumes")
        self._unrecorded.clear()
        return True

    def _thread_main(
        self,
        requests: trio.MemoryReceiveChannel[list[dict[str, Any]]],
        results: trio.MemorySendChannel[HandOff],
    ) -> None:
        """The hand-off thread: publish each batch it is given, report back."""
        from tasks.celery_app import create_app

        app = create_app(self.config.broker, self.config.data_dir)
        try:
            while True:
                # Each way the Trio side can be gone ends the thread.
                try:
                    jobs = trio.from_thread.run(requests.receive)
                except (trio.EndOfChannel, trio.ClosedResourceError, trio.RunFinishedError,
                        trio.Cancelled):  # fmt: skip
                    return
                result = publish_batch(app, jobs)
                try:
                    trio.from_thread.run(results.send, result)
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError,
                        trio.Cancelled):  # fmt: skip
                    return
        finally:
            app.close()
