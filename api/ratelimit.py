"""Per-client token-bucket rate limiting for the public (miner) endpoints, in memory.

A bucket per client key (the peer address) holds up to ``burst`` tokens and refills at
``rate`` tokens/s; a request takes one. An empty bucket gives a 429 problem with
``Retry-After`` (whole seconds until one token is back). The table is bounded (LRU eviction),
so a flood of distinct addresses cannot grow memory without limit. Per process: behind several
workers or a proxy, rate limit at the proxy too.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request

from api.problems import Problem


class TokenBucketLimiter:
    """Token buckets keyed by client; thread-safe (sync endpoints run in a thread pool)."""

    def __init__(self, rate: float, burst: int, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
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


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def too_many(wait: float) -> Problem:
    """The 429 ``rate-limited`` problem for a client whose next token is ``wait`` s away."""
    retry = max(1, math.ceil(wait))
    return Problem(429, "rate-limited", f"too many requests; retry in {retry} s",
                   headers={"Retry-After": str(retry)}, retry_after=retry)


async def rate_limited(request: Request) -> None:
    """Dependency for public routes: 429 ``rate-limited`` when the client's bucket is empty.
    A request :mod:`api.fast_reads` already counted (``state.rate_counted``) takes no second
    token."""
    limiter: TokenBucketLimiter | None = request.app.state.limiter
    if limiter is None or request.scope.get("state", {}).get("rate_counted"):
        return
    wait = limiter.take(client_key(request))
    if wait > 0:
        raise too_many(wait)
