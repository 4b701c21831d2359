"""E-mail on the server side: outbox -> Celery broker, and the embedded worker.

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

:class:`EmbeddedWorker` runs ``celery -A tasks worker`` as a child process
when no broker is configured (the embedded filesystem broker under
``<data_dir>/broker``), relays its log lines, restarts it if it dies, and
stops it with a warm shutdown (SIGTERM) when the server stops.

:func:`start_mail` starts what a configuration needs in the server's nursery.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import re
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .config import Config
from .storage import StorageBusy

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)
worker_log = logging.getLogger(__name__ + ".worker")

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
#: Seconds the embedded worker gets for a warm shutdown (finish or put back
#: the message in hand) before it is killed; a killed worker's message is
#: put back by the next worker (see ``tasks.fsbroker``).
WORKER_STOP_TIMEOUT = 10.0
#: Backoff between restarts of an embedded worker that keeps dying.
WORKER_RESTART_MIN = 1.0
WORKER_RESTART_MAX = 60.0
#: A worker that ran this many seconds counts as healthy: the next restart
#: starts again from the minimum delay.
WORKER_HEALTHY_AFTER = 60.0
#: Unformatted worker output lines (banner, tracebacks) kept to show when the
#: worker exits with an error.
WORKER_TAIL_LINES = 40
#: A worker log line longer than this is cut (a runaway traceback line must
#: not make us buffer without bound).
WORKER_MAX_LINE = 16 * 1024

_LEVELS: dict[str, int] = {
    name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
}
_CELERY_LINE = re.compile(r"^\[[^\]]*?: (DEBUG|INFO|WARNING|ERROR|CRITICAL)/[^\]]*\] ?(.*)$")


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


class Outbox(Protocol):
    """What the dispatcher needs of :class:`~livenotify.storage.StorageBridge`.

    Rows passed to ``mark_mail_queued`` leave ``pending_mail`` at once;
    ``wait_outbox`` returns once rows were added after the latest
    ``pending_mail`` began. Both may raise ``StorageBusy``.
    """

    async def pending_mail(self, limit: int) -> Sequence[OutboxJob]: ...
    def mark_mail_queued(self, outbox_ids: Sequence[int]) -> int: ...
    async def wait_outbox(self) -> None: ...


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

    def __init__(self, config: Config, storage: Outbox, *, batch: int = HANDOFF_BATCH) -> None:
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
                with trio.move_on_after(OUTBOX_POLL):
                    await self.storage.wait_outbox()
                continue
            await requests.send([job_message(job) for job in jobs])
            result = await results.receive()
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


def worker_command(config: Config) -> list[str]:
    """``celery -A tasks worker`` for the embedded broker, one process, one task at a time."""
    level = config.log_level if config.log_level in ("DEBUG", "INFO", "WARNING") else "INFO"
    return [
        # -P: no current directory on sys.path, so a "tasks" module that
        # happens to lie there cannot stand in for ours (PYTHONPATH has ours).
        sys.executable, "-P", "-m", "celery", "-A", "tasks", "worker",
        # solo: one mail at a time is plenty for a first run, and it is the
        # smallest worker (no pool processes).
        "--pool=solo", "--concurrency=1",
        # Gossip, mingle and heartbeats talk to other workers over broadcast
        # queues; an embedded worker has none.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        f"--hostname=livenotify-mail-{os.getpid()}@%h",
        f"--loglevel={level}",
    ]  # fmt: skip


def worker_environment(config: Config) -> dict[str, str]:
    """The environment of the embedded worker: our own, plus where its data lives."""
    env = dict(os.environ)
    env.pop("LIVENOTIFY_BROKER", None)  # embedded: no broker URL
    env["LIVENOTIFY_DATA_DIR"] = str(Path(config.data_dir).absolute())
    env["LIVENOTIFY_PARENT_PID"] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    # The worker imports ``tasks`` from where we would, installed or not
    # (found without importing it: that would load Celery on the Trio thread).
    spec = importlib.util.find_spec("tasks")
    if spec is None or not spec.submodule_search_locations:
        where = spec.origin if spec is not None else "nowhere"
        raise RuntimeError(
            f"'tasks' (the e-mail worker package) resolves to {where}: "
            "is a tasks.py in the current folder hiding it?"
        )
    root = str(Path(next(iter(spec.submodule_search_locations))).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class EmbeddedWorker:
    """Runs and supervises the e-mail worker of the embedded broker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pid: int | None = None
        self.starts = 0
        self._tail: deque[str] = deque(maxlen=WORKER_TAIL_LINES)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the worker; restart it with backoff when it dies; stop it on cancel."""
        delay = WORKER_RESTART_MIN
        command, env = worker_command(self.config), worker_environment(self.config)
        while True:
            started_at = trio.current_time()
            code = await self._run_once(command, env, task_status)
            task_status = trio.TASK_STATUS_IGNORED
            if trio.current_time() - started_at >= WORKER_HEALTHY_AFTER:
                delay = WORKER_RESTART_MIN
            log.warning("mail worker exited with status %s; restarting in %.0fs", code, delay)
            for line in self._tail:
                worker_log.warning("%s", line)
            self._tail.clear()
            await trio.sleep(delay)
            delay = min(delay * 2, WORKER_RESTART_MAX)

    async def _run_once(
        self, command: list[str], env: dict[str, str], task_status: trio.TaskStatus[None]
    ) -> int:
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    check=False,
                    deliver_cancel=self._stop,
                )
            )
            self.pid = proc.pid
            self.starts += 1
            log.info("mail worker started (pid %d)", proc.pid)
            task_status.started()
            assert proc.stdout is not None
            nursery.start_soon(self._relay, proc.stdout)
        self.pid = None
        return proc.returncode if proc.returncode is not None else -1

    async def _stop(self, proc: trio.Process) -> None:
        proc.terminate()  # Celery: warm shutdown
        with trio.move_on_after(WORKER_STOP_TIMEOUT):
            await proc.wait()
            log.info("mail worker stopped")
            return
        log.warning("mail worker did not stop within %.0fs; killing it", WORKER_STOP_TIMEOUT)
        proc.kill()

    async def _relay(self, stream: trio.abc.ReceiveStream) -> None:
        """Re-log the worker's output, one line at a time, at its own level."""
        buffer = bytearray()
        async for chunk in stream:
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            if len(rest) > WORKER_MAX_LINE:
                lines.append(rest[:WORKER_MAX_LINE])
                rest = bytearray()
            buffer = bytearray(rest)
            for raw in lines:
                self._relay_line(raw.decode(errors="replace").rstrip())
        if buffer:
            self._relay_line(buffer.decode(errors="replace").rstrip())

    def _relay_line(self, line: str) -> None:
        if not line.strip():
            return
        m = _CELERY_LINE.match(line)
        if m is None:
            # Banner and traceback lines: shown if the worker dies.
            self._tail.append(line)
            worker_log.debug("%s", line)
            return
        worker_log.log(_LEVELS[m.group(1)], "%s", m.group(2))


@dataclass(slots=True)
class MailService:
    """The running e-mail side of a server."""

    dispatcher: MailDispatcher
    worker: EmbeddedWorker | None

    def stop(self) -> None:
        """Stop handing over mail; call before closing storage."""
        self.dispatcher.stop()


async def start_mail(nursery: trio.Nursery, config: Config, storage: Outbox) -> MailService:
    """Start the dispatcher (and, for the embedded broker, the worker) in ``nursery``."""
    dispatcher = MailDispatcher(config, storage)
    await nursery.start(dispatcher.run)
    worker: EmbeddedWorker | None = None
    if config.broker is None and config.worker:
        worker = EmbeddedWorker(config)
        await nursery.start(worker.run)
    elif config.broker is None:
        log.info("mail: embedded broker without a worker (--no-worker); mail waits in the broker")
    return MailService(dispatcher, worker)
