"""Real services for the backplane tests: a key prefix in the shared Redis
(database LIVENOTIFY_TEST_REDIS_DB), a private ``redis-server`` a test may
stop and restart, a PostgreSQL database per test, and N server processes.

Every test uses its own key prefix and deletes its keys after; a test that
stops Redis starts its own (never the shared one at 6379).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import LineClient, LogLines, ServerProcess, running_server
from tests.mailtools import free_tcp_port
from tests.pg import fresh_database

REDIS_DB = int(os.environ.get("LIVENOTIFY_TEST_REDIS_DB", "15"))
SHARED_REDIS = f"redis://127.0.0.1:6379/{REDIS_DB}"
BOUND = 30.0


def new_prefix() -> str:
    return f"livenotify-test-{uuid.uuid4().hex}"


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=prefix + ":*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix in the shared test database, deleted after."""
    try:
        redis.Redis.from_url(SHARED_REDIS, socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {SHARED_REDIS}: {exc}")
    name = new_prefix()
    try:
        yield name
    finally:
        delete_prefix(SHARED_REDIS, name)


class OwnRedis:
    """A private redis-server on a free port; AOF (every write fsynced) when
    ``durable``, so a restart keeps what it acknowledged."""

    def __init__(self, folder: Path, *, durable: bool) -> None:
        self.port = free_tcp_port()
        self.dir = folder
        self.durable = durable
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *aof, "--dir", str(self.dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        LogLines(self.proc.stdout).wait(r"Ready to accept connections", timeout)

    def stop(self) -> None:
        """SIGTERM (an AOF is complete: every write was fsynced)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def wipe(self) -> None:
        """Forget everything on disk (the next start is an empty Redis)."""
        for child in self.dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


@contextmanager
def own_redis(folder: Path, *, durable: bool = True) -> Iterator[OwnRedis]:
    server = OwnRedis(folder, durable=durable)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own (livenotify_test_<hex>), dropped after."""
    with fresh_database() as url:
        yield url


@contextmanager
def cluster(
    count: int, backend: str, prefix: str, *args: str, db: str | None = None
) -> Iterator[list[ServerProcess]]:
    """``count`` server processes on one backend (and one ``db`` if given)."""
    flags = ("--backend", backend, "--backend-prefix", prefix, *args)
    with ExitStack() as stack:
        yield [stack.enter_context(running_server(*flags, db=db)) for _ in range(count)]


def subscriber(server: ServerProcess, events: list[str] | None = None) -> LineClient:
    """A TCP client subscribed to ``events`` (every event by default)."""
    client = LineClient("127.0.0.1", server.tcp_port)
    assert client.recv()["type"] == "welcome"
    client.send({"type": "subscribe", "events": events or ["*"]})
    client.recv_type("subscribed")
    return client


def publish(client: LineClient, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """Publish and return the answer (``published`` or an error)."""
    client.send({"type": "publish", "event": event, "data": data})
    while True:
        obj = client.recv()
        if obj["type"] in ("published", "error"):
            return obj


def notifications(client: LineClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` notifications (other messages skipped)."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        obj = client.recv()
        if "offset" in obj and obj["type"] not in ("published",):
            out.append(obj)
    return out
