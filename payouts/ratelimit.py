"""Per-client rate limits, in memory or shared through the store (issue 15).

One limit is a rate (requests a second, sustained) and a burst (requests at once) per client
key. Two implementations of the same :class:`RateLimiter` contract:

- :class:`TokenBucketLimiter`: a token bucket per key in this process's memory (LRU-bounded).
  The only one on SQLite, where ``payouts serve`` is one process.
- :class:`payouts.store.rate_limits.SharedRateLimiter`: one GCRA cell per key in the
  ``rate_limits`` table, updated by one atomic UPSERT per request on PostgreSQL, so a limit
  holds on the sum of every frontend (``payouts serve`` processes) sharing the database.

:func:`rate_limiter` picks by the store's backend. The API's public routes (scope ``api``) and
the JD server's token allocations and declarations per source address (scopes ``jds-tokens``,
``jds-declarations``) use them; docs/api.md and docs/jds.md say which.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine


class RateLimiter(Protocol):
    """``take(key)``: 0.0 when the request is let through (and counted), else the seconds until
    one would be (nothing counted). ``shared``: True when ``take`` does I/O (call it off the
    event loop)."""

    rate: float
    burst: int
    shared: bool

    def take(self, key: str) -> float: ...


def check_limit(rate: float, burst: int) -> None:
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")


class TokenBucketLimiter:
    """Token buckets keyed by client, in memory; thread-safe (sync endpoints run in a thread
    pool). A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens/s; a request
    takes one. The table is bounded (LRU eviction), so a flood of distinct keys cannot grow
    memory without limit."""

    shared = False

    def __init__(self, rate: float, burst: int, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        check_limit(rate, burst)
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if allowed, else seconds until one is available."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


def rate_limiter(engine: Engine, scope: str, rate: float, burst: int) -> RateLimiter:
    """The limiter for ``scope`` on this store: shared through PostgreSQL (every process on
    the database counts against one limit), in memory on SQLite (one process)."""
    if engine.dialect.name == "sqlite":
        return TokenBucketLimiter(rate, burst)
    from payouts.store.rate_limits import SharedRateLimiter

    return SharedRateLimiter(engine, scope, rate, burst)


__all__ = ["RateLimiter", "TokenBucketLimiter", "check_limit", "rate_limiter"]
