"""Who holds a connection slot of an SV2 server, sans-I/O: the admission and eviction rules of
:class:`~sv2.listener.NoiseListener` (docs/jds.md, "Connection limits").

A connection is *pending* from accept until its ``SetupConnection`` is accepted, then *set up*.
The two kinds have separate slots, so half-open connections cannot take the place of set-up
ones:

- set-up connections: at most ``max_connections``; while they are all taken a new connection is
  refused at once (no handshake is worth doing);
- pending connections: at most ``max_pending``. Completing the server's side of the Noise NX
  handshake costs a peer nothing (any 64 bytes are a valid act 1), so pending slots are never
  granted first-come-first-kept: when they are all taken, the new connection takes the slot of
  the oldest pending connection of the source address that holds the most pending ones. A flood
  from one address thus only ever displaces itself, and an honest client (who needs a few
  milliseconds of a slot) gets in;
- per source address (an IPv4 address, an IPv6 /64: :func:`source_address`): at most
  ``max_pending_per_address`` pending and ``max_connections_per_address`` in all. Beyond either,
  the address's own oldest pending connection makes room; an address whose connections are all
  set up is refused. And at most ``connects_per_address_per_sec`` new connections a second
  (a token bucket holding two seconds' worth): beyond that a connection is refused before the
  server computes its act 2 (an ephemeral key and two ECDHs) for it, so an address reconnecting
  as fast as it can costs the server an accept and a close, not a handshake.

Each rule is also a deadline's complement: a pending connection is closed when its setup
deadline passes whatever bytes it sends (:mod:`sv2.listener`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, NamedTuple

PRUNE_BUCKETS_AT = 4_096  # forget idle addresses' rate buckets beyond this many


def source_address(peername: Any) -> str:
    """The address a connection is counted under: the IPv4 address (an IPv4-mapped IPv6 one
    too), the /64 of an IPv6 address (one subscriber's usual allocation: counting single IPv6
    addresses would let one host open 2^64 "sources"), else the peer name as text."""
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(peername)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Eviction(NamedTuple):
    """A pending connection to close to make room: ``counter`` names the server statistic,
    ``reason`` is logged."""

    conn_id: int
    counter: str
    reason: str


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a new connection: ``refused`` (the statistic to count) or admitted after
    closing ``evict`` (oldest first)."""

    refused: str | None
    evict: tuple[Eviction, ...] = ()


class ConnectionSlots:
    """The slot book of one server (see the module docstring). ``None`` per-address limits:
    unbounded."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_pending: int,
        max_connections_per_address: int | None,
        max_pending_per_address: int | None,
        connects_per_address_per_sec: float | None = None,
    ) -> None:
        if max_pending < 1 or (max_pending_per_address is not None and max_pending_per_address < 1):
            raise ValueError("a server needs at least one pending slot (per address too)")
        if connects_per_address_per_sec is not None and connects_per_address_per_sec <= 0:
            raise ValueError("connects_per_address_per_sec must be positive (None: no limit)")
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_per_address = max_connections_per_address
        self.max_pending_per_address = max_pending_per_address
        self.rate = connects_per_address_per_sec
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at)
        self._source: dict[int, str] = {}
        self._pending: dict[int, str] = {}  # insertion order: accept order
        self._pending_by: dict[str, dict[int, None]] = {}
        self._count_by: dict[str, int] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def established(self) -> int:
        return len(self._source) - len(self._pending)

    def pending_of(self, source: str) -> int:
        return len(self._pending_by.get(source, ()))

    def connections_of(self, source: str) -> int:
        return self._count_by.get(source, 0)

    def is_pending(self, conn_id: int) -> bool:
        return conn_id in self._pending

    def admit(self, conn_id: int, source: str, now: float = 0.0) -> Admission:
        """Decide on a new connection (``now``: a monotonic clock in seconds, for the rate
        limit); when admitted it holds a pending slot and the evicted connections hold none any
        more (the caller closes them)."""
        if self.established >= self.max_connections:
            return Admission("refused-max-connections")
        if not self._take_token(source, now):
            return Admission("refused-address-rate")
        evict: list[Eviction] = []
        mine = self._pending_by.get(source, {})
        if self.max_per_address is not None and self.connections_of(source) >= self.max_per_address:
            if not mine:
                return Admission("refused-address-connections")
            evict.append(self._evict(next(iter(mine)), "address-connections"))
        elif self.max_pending_per_address is not None and len(mine) >= self.max_pending_per_address:
            evict.append(self._evict(next(iter(mine)), "address-handshakes"))
        if len(self._pending) >= self.max_pending:
            busiest = max(self._pending_by.values(), key=len)
            evict.append(self._evict(next(iter(busiest)), "handshake-slots"))
        self._source[conn_id] = source
        self._pending[conn_id] = source
        self._pending_by.setdefault(source, {})[conn_id] = None
        self._count_by[source] = self._count_by.get(source, 0) + 1
        return Admission(None, tuple(evict))

    def promote(self, conn_id: int) -> bool:
        """``conn_id``'s SetupConnection was accepted: give it a set-up slot. False (it keeps
        its pending slot; the caller closes it) when they are all taken."""
        if conn_id not in self._pending:
            return conn_id in self._source
        if self.established >= self.max_connections:
            return False
        self._unpend(conn_id)
        return True

    def release(self, conn_id: int) -> None:
        """``conn_id`` is gone (idempotent)."""
        source = self._source.pop(conn_id, None)
        if source is None:
            return
        self._unpend(conn_id)
        left = self._count_by[source] - 1
        if left:
            self._count_by[source] = left
        else:
            del self._count_by[source]

    def _take_token(self, source: str, now: float) -> bool:
        """One connect from ``source``'s token bucket (``2 × rate`` deep, refilled at
        ``rate``/s); False when it is empty."""
        if self.rate is None:
            return True
        depth = 2 * self.rate
        tokens, at = self._buckets.get(source, (depth, now))
        tokens = min(depth, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            return False
        if len(self._buckets) >= PRUNE_BUCKETS_AT and source not in self._buckets:
            self._prune(now, depth)
        self._buckets[source] = (tokens - 1, now)
        return True

    def _prune(self, now: float, depth: float) -> None:
        """Drop the buckets that have refilled (they equal a fresh one)."""
        assert self.rate is not None
        self._buckets = {
            s: (t, at)
            for s, (t, at) in self._buckets.items()
            if t + (now - at) * self.rate < depth
        }

    def _unpend(self, conn_id: int) -> None:
        source = self._pending.pop(conn_id, None)
        if source is None:
            return
        mine = self._pending_by[source]
        del mine[conn_id]
        if not mine:
            del self._pending_by[source]

    def _evict(self, conn_id: int, why: str) -> Eviction:
        self.release(conn_id)
        return Eviction(conn_id, f"evicted-{why}", f"evicted: {why.replace('-', ' ')} limit")


__all__ = ["Admission", "ConnectionSlots", "Eviction", "source_address"]
