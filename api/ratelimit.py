"""Per-client rate limiting of the public (miner) endpoints (:mod:`payouts.ratelimit`).

A limit per client key (the peer address): ``rate`` requests/s with bursts of ``burst``. Over
it, a 429 problem with ``Retry-After`` (whole seconds until a request would pass). On
PostgreSQL the limit is shared by every ``payouts serve`` process on the database (one UPSERT
per request, :class:`payouts.store.rate_limits.SharedRateLimiter`), so it holds on the sum of
all frontends; on SQLite it is this process's memory (:class:`TokenBucketLimiter`). Behind a
proxy, the peer address is the proxy's: rate limit at the proxy too.
"""

from __future__ import annotations

import math

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.problems import Problem
from payouts.ratelimit import RateLimiter, TokenBucketLimiter

SCOPE = "api"  # the limit's name in the shared table


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def too_many(wait: float) -> Problem:
    """The 429 ``rate-limited`` problem for a client whose next token is ``wait`` s away."""
    retry = max(1, math.ceil(wait))
    return Problem(429, "rate-limited", f"too many requests; retry in {retry} s",
                   headers={"Retry-After": str(retry)}, retry_after=retry)


async def rate_limited(request: Request) -> None:
    """Dependency for public routes: 429 ``rate-limited`` when the client is over its limit.
    A request :mod:`api.fast_reads` already counted (``state.rate_counted``) takes no second
    token."""
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is None or request.scope.get("state", {}).get("rate_counted"):
        return
    key = client_key(request)
    # The shared limiter does a database round trip: off the event loop.
    wait = await run_in_threadpool(limiter.take, key) if limiter.shared else limiter.take(key)
    if wait > 0:
        raise too_many(wait)


__all__ = ["SCOPE", "TokenBucketLimiter", "client_key", "rate_limited", "too_many"]
