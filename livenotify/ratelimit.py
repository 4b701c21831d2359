"""A token bucket for messages per second per connection."""

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

    def take(self) -> bool:
        """Spend one token; False means the caller is over the limit."""
        if self._rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
