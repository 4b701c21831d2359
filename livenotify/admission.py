"""Connection admission: a cap in total and per client IP address."""

from __future__ import annotations

from collections import Counter

from .config import Limits


class Admission:
    """Counts open connections so one host cannot take every slot."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._per_ip: Counter[str] = Counter()
        self.total = 0

    def admit(self, ip: str) -> bool:
        """Take a slot for ``ip``; False when a limit is reached."""
        if self.total >= self._limits.max_connections:
            return False
        if self._per_ip[ip] >= self._limits.max_connections_per_ip:
            return False
        self.total += 1
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
