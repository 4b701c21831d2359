"""The per-recipient cap on notification mails (ntfy's rule).

Each recipient has a token bucket: ``--mail-burst`` mails at once, then
``--mail-per-hour``. A mail over the cap is not sent: its outbox row is
marked handled, it is counted (``stats``: ``mail_capped``), and the first
one per recipient and window is logged. The buckets live in memory: a
restart gives every recipient a full burst again.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("livenotify.mail")

#: Buckets kept before full ones (the default state) are forgotten.
PRUNE_AT = 10_000


class _Bucket:
    __slots__ = ("stamp", "tokens", "warned")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        #: The cap was logged for this window (until a mail goes out again).
        self.warned = False


class RecipientCap:
    """Token buckets per recipient: :meth:`take` before sending a mail."""

    def __init__(self, burst: int, per_hour: float) -> None:
        self.burst = float(burst)
        self.rate = per_hour / 3600.0  # tokens per second
        self._buckets: dict[str, _Bucket] = {}
        #: Mails not sent because of the cap.
        self.capped: int = 0

    def _bucket(self, email: str, now: float) -> _Bucket:
        bucket = self._buckets.get(email)
        if bucket is None:
            if len(self._buckets) >= PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[email] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def take(self, email: str, now: float | None = None) -> bool:
        """Whether one more mail to ``email`` may go out now (and count it)."""
        now = time.monotonic() if now is None else now
        bucket = self._bucket(email, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            return True
        self.capped += 1
        if not bucket.warned:
            bucket.warned = True
            log.warning(
                "mail to %s over its cap (%d, then %g per hour): not sent",
                email, int(self.burst), self.rate * 3600,
            )  # fmt: skip
        return False

    def refund(self, email: str) -> None:
        """Give back what :meth:`take` counted for a mail that was not handed over."""
        bucket = self._buckets.get(email)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1.0)

    def _prune(self, now: float) -> None:
        for email in list(self._buckets):
            bucket = self._buckets[email]
            if bucket.tokens + (now - bucket.stamp) * self.rate >= self.burst:
                del self._buckets[email]
