"""Rate limits shared by every process on one PostgreSQL database (issue 15: "rate limits hold
across frontends"); :mod:`payouts.ratelimit` holds the contract and the in-memory limiter.

Table ``rate_limits``: one row per (scope, client key) holding a GCRA cell (the generic cell
rate algorithm, ITU-T I.371 / RFC 2697's leaky-bucket equivalent): ``tat_us``, the theoretical
arrival time in microseconds of the database server's clock. With emission interval
``T = 1/rate`` and tolerance ``tau = (burst - 1)·T``, a request at ``now`` passes iff
``tat - now <= tau``, and then ``tat = max(tat, now) + T``; it is exactly a token bucket of
``burst`` tokens refilled at ``rate``. One number per key makes the whole check one atomic
``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING``: the row is locked for the update,
so concurrent frontends serialize on it and the limit holds on their sum; a refused request
updates nothing and returns no row.

Why these choices:

- The database's clock (``clock_timestamp()``), not each frontend's: frontends in several
  places with skewed clocks still share one timeline.
- Its own small engine in autocommit with ``synchronous_commit = off``: one round trip per
  request and no WAL flush to wait for (losing the last few milliseconds of counts in a crash
  only lets a few requests more through; the row survives a restart and a failover).
- No index on ``tat_us`` (an indexed column changing on every request would forbid
  PostgreSQL's HOT updates); :meth:`SharedRateLimiter.prune` deletes rows whose cell is full
  again (``tat_us`` in the past: the same as no row) once a minute.
- If the database cannot be reached, the limit falls back to this process's in-memory bucket
  (logged once per outage): the request still meets a limit, and the API answers as it can.

Cost per request (benchmarks/bench_rate_limits.py, docs/BENCHMARKS.md): one round trip.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from sqlalchemy import BigInteger, Engine, String, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from payouts.ratelimit import TokenBucketLimiter, check_limit
from payouts.store.engine import make_engine
from payouts.store.models import Base

log = logging.getLogger(__name__)

SCOPE_MAX = 32
KEY_MAX = 128
PRUNE_EVERY_SEC = 60.0


class RateLimitCell(Base):
    """One client's GCRA cell in one limit (module docstring)."""

    __tablename__ = "rate_limits"

    scope: Mapped[str] = mapped_column(String(SCOPE_MAX), primary_key=True)
    key: Mapped[str] = mapped_column(String(KEY_MAX), primary_key=True)
    tat_us: Mapped[int] = mapped_column(BigInteger)


_NOW_US = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
# excluded.tat_us is now + T, so "now" inside DO UPDATE is excluded.tat_us - T.
_TAKE = text(f"""
INSERT INTO rate_limits (scope, key, tat_us) VALUES (:scope, :key, {_NOW_US} + :t)
ON CONFLICT (scope, key) DO UPDATE
SET tat_us = GREATEST(rate_limits.tat_us + :t, excluded.tat_us)
WHERE rate_limits.tat_us - (excluded.tat_us - :t) <= :tau
RETURNING tat_us
""")
_WAIT = text(f"SELECT tat_us - {_NOW_US} FROM rate_limits WHERE scope = :scope AND key = :key")
_PRUNE = text(f"DELETE FROM rate_limits WHERE scope = :scope AND tat_us < {_NOW_US}")

_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


def limit_engine(engine: Engine) -> Engine:
    """The rate limits' own engine on ``engine``'s database (one per store engine, shared by
    its limiters): autocommit, ``synchronous_commit = off``, a small pool."""
    with _engines_lock:
        own = _engines.get(engine)
        if own is None:
            own = make_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=2,
                              max_overflow=16, pool_pre_ping=False)

            @event.listens_for(own, "connect")
            def _no_flush_wait(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                try:
                    cur.execute("SET synchronous_commit = off")
                finally:
                    cur.close()

            _engines[engine] = own
            weakref.finalize(engine, own.dispose)
        return own


class SharedRateLimiter:
    """A limit of ``rate``/s with bursts of ``burst`` per key, shared by every process on the
    database (module docstring). Thread-safe; :meth:`take` does one database round trip."""

    shared = True

    def __init__(self, engine: Engine, scope: str, rate: float, burst: int) -> None:
        check_limit(rate, burst)
        if not 0 < len(scope) <= SCOPE_MAX:
            raise ValueError(f"scope must be 1..{SCOPE_MAX} characters")
        self.rate = rate
        self.burst = burst
        self.scope = scope
        self.engine = limit_engine(engine)
        self.interval_us = max(1, round(1_000_000 / rate))
        self.tolerance_us = (burst - 1) * self.interval_us
        self._fallback = TokenBucketLimiter(rate, burst)
        self._down = False
        self._next_prune = time.monotonic() + PRUNE_EVERY_SEC

    def take(self, key: str) -> float:
        """0.0 and one request counted for ``key``, or the seconds until one would pass."""
        key = key[:KEY_MAX]
        params = {"scope": self.scope, "key": key, "t": self.interval_us,
                  "tau": self.tolerance_us}
        try:
            with self.engine.connect() as conn:
                if conn.execute(_TAKE, params).first() is not None:
                    wait = 0.0
                else:
                    ahead = conn.execute(_WAIT, params).scalar()
                    wait = max(1, (ahead or 0) - self.tolerance_us) / 1e6
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + PRUNE_EVERY_SEC
                    conn.execute(_PRUNE, params)
        except SQLAlchemyError as exc:
            if not self._down:
                log.warning("rate limit %r: the database is unreachable (%s); limiting in "
                            "this process alone until it answers", self.scope,
                            type(exc).__name__)
            self._down = True
            return self._fallback.take(key)
        if self._down:
            log.info("rate limit %r: shared through the database again", self.scope)
            self._down = False
        return wait

    def prune(self) -> int:
        """Delete this limit's rows whose cell is full again (the same as no row)."""
        with self.engine.connect() as conn:
            return conn.execute(_PRUNE, {"scope": self.scope}).rowcount


__all__ = ["KEY_MAX", "RateLimitCell", "SharedRateLimiter", "limit_engine"]
