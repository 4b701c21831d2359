"""Real services for the e-mail tests: an SMTP sink, a Celery worker, a Redis.

* :class:`SmtpSink`: an aiosmtpd server on 127.0.0.1 that records every
  message it accepts and can be told to fail (4xx/5xx) or be stopped and
  started again on the same port.
* :class:`WorkerProcess`: ``celery -A tasks worker`` as a subprocess with its
  log captured line by line.
* :class:`RedisServer`: a private ``redis-server`` on a free port, for the
  tests that kill the broker.

Every wait is bounded and raises with the relevant log attached.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from aiosmtpd.controller import Controller

from tests.helpers import ROOT, LogLines

#: The Redis test database of the mail tests (flushed before and after).
#: Concurrent runs on one machine each pick their own with the variable.
MAIL_REDIS_DB = int(os.environ.get("LIVENOTIFY_TEST_REDIS_DB", "13"))
MAIL_REDIS_URL = f"redis://127.0.0.1:6379/{MAIL_REDIS_DB}"
#: A worker start on a loaded 2-core machine: interpreter, Celery, broker.
WORKER_START_TIMEOUT = 30.0
#: Fast retries for tests: 0.1-0.2 s, then 0.2-0.4 s... capped at 1 s.
FAST_RETRY_ENV = {
    "LIVENOTIFY_MAIL_RETRY_DELAY": "0.2",
    "LIVENOTIFY_MAIL_RETRY_MAX_DELAY": "1",
    "LIVENOTIFY_SMTP_TIMEOUT": "5",
}


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.sink.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink._take_hold():
            # Park this conversation (in a thread, so the SMTP loop goes on)
            # until the test releases it; the client is gone by then.
            await asyncio.get_running_loop().run_in_executor(None, self.sink._released.wait, 60)
            return "451 4.3.0 held by the test"
        return self.sink._accept(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)


class SmtpSink:
    """An aiosmtpd server that records what it accepts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_tcp_port()
        self.received: list[Received] = []
        self.refuse: set[str] = set()
        self._fail_next = 0
        self._attempts = 0
        self._hold = False
        self._holding = False
        self._released = threading.Event()
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._released.set()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def hold_next(self) -> None:
        """Keep the next DATA command waiting until :meth:`release`."""
        with self._cond:
            self._hold = True
            self._holding = False
            self._released.clear()

    def wait_holding(self, timeout: float = 20.0) -> None:
        """Wait until a sender is parked by :meth:`hold_next`."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._holding, timeout):
                raise AssertionError(f"SMTP sink: nobody reached DATA within {timeout}s")

    def release(self) -> None:
        self._released.set()

    def _take_hold(self) -> bool:
        with self._cond:
            if not self._hold:
                return False
            self._hold = False
            self._holding = True
            self._attempts += 1
            self._cond.notify_all()
            return True

    def fail_next(self, count: int) -> None:
        """Answer the next ``count`` DATA commands with a 451 (try again later)."""
        with self._cond:
            self._fail_next = count

    @property
    def attempts(self) -> int:
        with self._cond:
            return self._attempts

    def _accept(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> str:
        with self._cond:
            self._attempts += 1
            if self._fail_next > 0:
                self._fail_next -= 1
                return "451 4.3.0 try again later"
            self.received.append(Received(mail_from, rcpt_tos, content))
            self._cond.notify_all()
        return "250 OK"

    def clear(self) -> None:
        with self._cond:
            self.received.clear()
            self._attempts = 0
            self._fail_next = 0
            self.refuse.clear()

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0
    ) -> list[Received]:
        """Wait until ``predicate(received)`` holds; return a copy of what arrived."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.received), timeout):
                got = [(r.rcpt_tos, r.message["Subject"]) for r in self.received]
                raise AssertionError(f"SMTP sink: condition not met in {timeout}s; got {got}")
            return list(self.received)

    def wait_count(self, count: int, timeout: float = 20.0) -> list[Received]:
        return self.wait_for(lambda r: len(r) >= count, timeout)

    def to(self, address: str) -> list[Received]:
        with self._cond:
            return [r for r in self.received if address in r.rcpt_tos]


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


class WorkerProcess:
    """``celery -A tasks worker`` with the given environment."""

    def __init__(self, env: dict[str, str], cwd: Path = ROOT) -> None:
        full = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        for name in ("LIVENOTIFY_BROKER", "LIVENOTIFY_SMTP_HOST"):
            if name not in env:
                full.pop(name, None)
        argv = [
            sys.executable, "-m", "celery", "-A", "tasks", "worker",
            "--pool=solo", "--concurrency=1", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=full,
            cwd=str(cwd),
        )
        self.log = LogLines(self.proc.stdout)

    def wait_ready(self) -> None:
        self.log.wait(r"mail worker ready", WORKER_START_TIMEOUT)
        self.log.wait(r"\bready\.$", WORKER_START_TIMEOUT)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


@contextmanager
def celery_worker(env: dict[str, str]) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(env)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def flush_redis_db(url: str = MAIL_REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


class RedisServer:
    """A private redis-server on a free port that a test may kill and restart."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_tcp_port()
        self.dir = tmp
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        LogLines(self.proc.stdout).wait(r"Ready to accept connections", timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class LogWaiter(logging.Handler):
    """Collects log records in-process; Trio code awaits a matching one.

    Records are emitted on the Trio thread by the code under test, so a
    ``trio.Event`` per waiter is safe to set from :meth:`emit`.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[int, str, str]] = []
        self._waiters: list[tuple[re.Pattern[str], trio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.messages.append((record.levelno, record.name, text))
        for pattern, event in self._waiters:
            if pattern.search(text):
                event.set()

    def mark(self) -> int:
        return len(self.messages)

    def count(self, regex: str, start: int = 0, level: int | None = None) -> int:
        pattern = re.compile(regex)
        return sum(
            1
            for lvl, _, text in self.messages[start:]
            if pattern.search(text) and (level is None or lvl == level)
        )

    async def wait(self, regex: str, timeout: float = 20.0, *, start: int = 0) -> str:
        pattern = re.compile(regex)
        for _, _, text in self.messages[start:]:
            if pattern.search(text):
                return text
        event = trio.Event()
        entry = (pattern, event)
        self._waiters.append(entry)
        try:
            with trio.move_on_after(timeout):
                await event.wait()
        finally:
            self._waiters.remove(entry)
        for _, _, text in self.messages[start:]:
            if pattern.search(text):
                return text
        tail = "\n".join(t for _, _, t in self.messages[-40:])
        raise AssertionError(f"no log message matching {regex!r} within {timeout}s:\n{tail}")


@contextmanager
def capture_logs(*names: str) -> Iterator[LogWaiter]:
    """Attach a :class:`LogWaiter` to the named loggers at DEBUG."""
    waiter = LogWaiter()
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(waiter)
        lg.setLevel(logging.DEBUG)
    try:
        yield waiter
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.removeHandler(waiter)
            lg.setLevel(level)
