"""Idempotency keys: one notification reaches one recipient at most once.

A key (notification id + recipient) moves through two states:

* **sending**, a claim taken before talking to SMTP. Only one worker holds
  it; anyone else retries later. A claim whose holder died must not block a
  retry forever, so it lapses on its own.
* **sent**, recorded only after the SMTP server accepted the message (or the
  ``.eml`` file was written). A task that finds "sent" does nothing.

Two stores, chosen by the broker:

* :class:`RedisClaims` (broker ``redis://``): ``SET key sending:<token> NX EX
  claim_ttl`` in the broker's Redis, shared by every worker on every host. A
  crashed holder's claim expires after ``claim_ttl`` seconds. A failed send
  deletes the claim only if it is still ours (compare-and-delete script).
* :class:`FileClaims` (embedded or any other broker): one file per key under
  ``<data_dir>/mail-sent/``, locked with ``flock`` while sending. The kernel
  drops the lock when its process dies, so a crashed holder blocks nobody;
  "sent" is written into the file (and fsynced) before the lock is released.
  Lock files are never unlinked while in use (unlinking a locked file would
  let two processes lock two different files of the same name); a sweep at
  start removes those older than ``sent_ttl``. This store is for one host.

The window that remains: SMTP accepted the message but the worker died before
recording "sent". That mail is sent again; no protocol can close that gap
from the client side of SMTP.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: Redis key prefix; the key holds a hash, never the address itself.
REDIS_PREFIX = "livenotify:mail:"
#: Seconds until a task that found a key locked by a live file-store holder
#: looks again: about one SMTP conversation.
FILE_BUSY_RETRY = 10.0

_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def idempotency_key(notification_id: str, recipient: str) -> str:
    """A stable, address-free name for (notification, recipient)."""
    raw = f"{notification_id}\n{recipient.strip().lower()}"
    return hashlib.sha256(raw.encode()).hexdigest()


class Claim(Protocol):
    """The right to send one key's mail, held until marked or released."""

    def mark_sent(self) -> None:
        """Record that the mail was accepted; ends the claim."""

    def release(self) -> None:
        """Give the claim up without sending (a retry will take it again)."""


@dataclass(frozen=True, slots=True)
class AlreadySent:
    """The key's mail went out before."""


@dataclass(frozen=True, slots=True)
class Busy:
    """Another live worker is sending this key's mail right now."""

    retry_after: float


class ClaimStore(Protocol):
    def acquire(self, key: str) -> Claim | AlreadySent | Busy:
        """Try to claim ``key`` for sending."""


class _RedisClaim:
    def __init__(self, store: RedisClaims, name: str, token: str) -> None:
        self._store, self._name, self._token = store, name, token

    def mark_sent(self) -> None:
        # Unconditional: the mail *was* accepted, whoever else thinks it owns
        # the key by now.
        self._store.redis.set(self._name, "sent", ex=self._store.sent_ttl)

    def release(self) -> None:
        self._store.redis.eval(_RELEASE_SCRIPT, 1, self._name, self._token)


class RedisClaims:
    """Claims in the broker's Redis: ``SET NX EX``."""

    def __init__(self, redis: Any, *, claim_ttl: int, sent_ttl: int) -> None:
        self.redis = redis
        self.claim_ttl = claim_ttl
        self.sent_ttl = sent_ttl

    @classmethod
    def from_url(cls, url: str, *, claim_ttl: int, sent_ttl: int, timeout: float) -> RedisClaims:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        return cls(client, claim_ttl=claim_ttl, sent_ttl=sent_ttl)

    def acquire(self, key: str) -> Claim | AlreadySent | Busy:
        name = REDIS_PREFIX + key
        for _ in range(3):  # the other holder's claim may lapse in between
            token = "sending:" + uuid.uuid4().hex
            if self.redis.set(name, token, nx=True, ex=self.claim_ttl):
                return _RedisClaim(self, name, token)
            value = self.redis.get(name)
            if value == "sent":
                return AlreadySent()
            if value is not None:
                ttl = self.redis.ttl(name)
                return Busy(float(ttl) if ttl and ttl > 0 else 1.0)
        return Busy(1.0)


class _FileClaim:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def mark_sent(self) -> None:
        fd = self._take()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"sent {time.time():.0f}\n".encode(), 0)
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the flock

    def release(self) -> None:
        os.close(self._take())

    def _take(self) -> int:
        if self._fd is None:
            raise RuntimeError("claim already ended")
        fd, self._fd = self._fd, None
        return fd


class FileClaims:
    """Claims as ``flock``ed files under one folder (one host)."""

    def __init__(self, folder: str | os.PathLike[str], *, sent_ttl: int) -> None:
        self.folder = Path(folder)
        self.sent_ttl = sent_ttl
        self.folder.mkdir(parents=True, exist_ok=True)

    def acquire(self, key: str) -> Claim | AlreadySent | Busy:
        path = self.folder / f"{key}.state"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return Busy(FILE_BUSY_RETRY)
        except BaseException:
            os.close(fd)
            raise
        if os.pread(fd, 4, 0) == b"sent":
            os.close(fd)
            return AlreadySent()
        return _FileClaim(fd)

    def sweep(self) -> int:
        """Delete state files older than ``sent_ttl``; how many went."""
        cutoff = time.time() - self.sent_ttl
        removed = 0
        for path in self.folder.glob("*.state"):
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
                removed += 1
            except (BlockingIOError, FileNotFoundError):
                pass
            finally:
                os.close(fd)
        return removed
