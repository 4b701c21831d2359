"""A token bucket for messages per second per connection.

The limit is backpressure, not a filter: a session takes a token before it
reads each message (:meth:`TokenBucket.acquire`), so a connection whose
bucket is empty is simply not read until it refills. TCP and WebSocket flow
control then slow the sender down; nothing valid is ever discarded.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class TokenBucket:
    """Allow ``rate`` events per second on average and ``burst`` at once.

    ``rate <= 0`` disables the limit (for benchmarks and trusted producers).
    """

    __slots__ = ("_burst", "_clock", "_last", "_rate", "_tokens")  # one per connection

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._tokens = self._burst
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now

    def take(self) -> bool:
        """Spend one token; False means the caller is over the limit."""
        if self._rate <= 0:
            return True
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def delay(self) -> float:
        """Seconds until a token is there (0.0: one is there now)."""
        if self._rate <= 0:
            return 0.0
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate)

    async def acquire(self) -> bool:
        """Spend one token, waiting for the bucket to refill if it is empty;
        True when it had to wait."""
        waited = False
        while not self.take():
            waited = True
            await trio.sleep(self.delay())
        return waited
