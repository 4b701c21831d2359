"""Connection admission: a cap in total and per client address.

A connection is counted from the moment it is accepted, before any
handshake, so that connections still in their handshake cannot exhaust
file descriptors. An IPv6 client is counted per /64 (one subscriber line
usually holds a whole /64, so counting exact addresses would let one host
take every slot).
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from .config import Limits


def address_key(ip: str) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


class Admission:
    """Counts open connections so one host cannot take every slot."""

    def __init__(self, limits: Limits) -> None:
        #: The total cap; the server may lower it to the descriptors it has.
        self.max_connections = limits.max_connections
        self.max_per_address = limits.max_connections_per_ip
        self._per_ip: Counter[str] = Counter()
        self.total = 0
        #: Refused connections still being told so (bounded by the reserve).
        self.refusing = 0

    def admit(self, ip: str) -> bool:
        """Take a slot for ``ip``; False when a limit is reached."""
        if self.total >= self.max_connections:
            return False
        key = address_key(ip)
        if self._per_ip[key] >= self.max_per_address:
            return False
        self.total += 1
        self._per_ip[key] += 1
        return True

    def release(self, ip: str) -> None:
        key = address_key(ip)
        self.total -= 1
        self._per_ip[key] -= 1
        if self._per_ip[key] <= 0:
            del self._per_ip[key]
