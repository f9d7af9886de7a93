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
- Its own few driver connections (:class:`_Connections`) in autocommit with
  ``synchronous_commit = off``: one round trip per request, whatever the answer, and no WAL
  flush to wait for (losing the last few milliseconds of counts in a crash only lets a few
  requests more through; the rows survive a restart and a failover).
- No index on ``tat_us`` (an indexed column changing on every request would forbid
  PostgreSQL's HOT updates); :meth:`SharedRateLimiter.prune` deletes rows whose cell is full
  again (``tat_us`` in the past: the same as no row) once a minute.
- If the database cannot be reached, the limit falls back to this process's in-memory bucket
  (logged once per outage): the request still meets a limit, and the API answers as it can.

Cost per request (benchmarks/bench_rate_limits.py, docs/BENCHMARKS.md): one round trip.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from typing import Any

from sqlalchemy import BigInteger, Engine, String
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from payouts.ratelimit import TokenBucketLimiter, check_limit
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
# One statement, one round trip, whatever the answer. ``up`` takes a request from the cell
# (excluded.tat_us is now + T, so "now" inside DO UPDATE is excluded.tat_us - T); when it
# updates nothing (refused), the second branch reads how far ahead the cell is (a
# data-modifying CTE's siblings see the table as before it, which a refusal did not change).
_TAKE = f"""
WITH up AS (
  INSERT INTO rate_limits (scope, key, tat_us)
  VALUES (%(scope)s, %(key)s, {_NOW_US} + %(t)s)
  ON CONFLICT (scope, key) DO UPDATE
  SET tat_us = GREATEST(rate_limits.tat_us + %(t)s, excluded.tat_us)
  WHERE rate_limits.tat_us - (excluded.tat_us - %(t)s) <= %(tau)s
  RETURNING 1
)
SELECT true, 0 FROM up
UNION ALL
SELECT false, tat_us - {_NOW_US} FROM rate_limits
WHERE scope = %(scope)s AND key = %(key)s AND NOT EXISTS (SELECT 1 FROM up)
"""
_PRUNE = f"DELETE FROM rate_limits WHERE scope = %(scope)s AND tat_us < {_NOW_US}"


class _Connections:
    """Autocommit driver connections for the rate limits of one store engine, at most
    ``size``, reused last-in first-out.

    Why not ``engine.connect()``: a pooled SQLAlchemy connection costs a checkout, the
    statement's bookkeeping and a ROLLBACK on return; measured that was ~6× the UPSERT itself
    (benchmarks/bench_rate_limits.py). These connections are detached from the engine's pool
    (their autocommit mode and ``synchronous_commit = off`` never reach a caller that wants a
    transaction) and bounded here, so a busy API thread pool cannot open one per thread."""

    def __init__(self, engine: Engine, size: int = 8) -> None:
        self.engine = engine
        self._free: list[Any] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    def get(self) -> Any:
        self._slots.acquire()
        with self._lock:
            if self._free:
                return self._free.pop()
        try:
            raw = self.engine.raw_connection()
            conn: Any = raw.driver_connection
            raw.detach()  # after reading the driver connection: detaching forgets it
            conn.autocommit = True
            conn.execute("SET synchronous_commit = off")
        except BaseException:
            self._slots.release()
            raise
        return conn

    def put(self, conn: Any, *, broken: bool = False) -> None:
        if broken:
            with contextlib.suppress(Exception):  # gone either way
                conn.close()
        else:
            with self._lock:
                self._free.append(conn)
        self._slots.release()

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for conn in free:
            with contextlib.suppress(Exception):
                conn.close()


_pools: weakref.WeakKeyDictionary[Engine, _Connections] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def connections(engine: Engine) -> _Connections:
    """The rate limits' connections to ``engine``'s database (one set per store engine,
    shared by its limiters; closed when the engine goes)."""
    with _pools_lock:
        pool = _pools.get(engine)
        if pool is None:
            pool = _pools[engine] = _Connections(engine)
            weakref.finalize(engine, pool.close)
        return pool


class SharedRateLimiter:
    """A limit of ``rate``/s with bursts of ``burst`` per key, shared by every process on the
    database (module docstring). Thread-safe; :meth:`take` is one statement, one round trip."""

    shared = True

    def __init__(self, engine: Engine, scope: str, rate: float, burst: int) -> None:
        check_limit(rate, burst)
        if not 0 < len(scope) <= SCOPE_MAX:
            raise ValueError(f"scope must be 1..{SCOPE_MAX} characters")
        self.rate = rate
        self.burst = burst
        self.scope = scope
        self.connections = connections(engine)
        self.interval_us = max(1, round(1_000_000 / rate))
        self.tolerance_us = (burst - 1) * self.interval_us
        self._fallback = TokenBucketLimiter(rate, burst)
        self._errors = (SQLAlchemyError, engine.dialect.loaded_dbapi.Error)
        self._down = False
        self._next_prune = time.monotonic() + PRUNE_EVERY_SEC

    def take(self, key: str) -> float:
        """0.0 and one request counted for ``key``, or the seconds until one would pass."""
        key = key[:KEY_MAX]
        params = {"scope": self.scope, "key": key, "t": self.interval_us,
                  "tau": self.tolerance_us}
        try:
            row = self._execute(_TAKE, params)
        except self._errors as exc:  # the database is unreachable, or failed
            if not self._down:
                log.warning("rate limit %r: the database is unreachable (%s); limiting in "
                            "this process alone until it answers", self.scope,
                            type(exc).__name__)
            self._down = True
            return self._fallback.take(key)
        if self._down:
            log.info("rate limit %r: shared through the database again", self.scope)
            self._down = False
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SEC
            self.prune()
        if row is None:  # refused, and the cell pruned meanwhile: it was full a moment ago
            return self.interval_us / 1e6
        passed, ahead = row
        return 0.0 if passed else max(1, int(ahead) - self.tolerance_us) / 1e6

    def prune(self) -> int:
        """Delete this limit's rows whose cell is full again (the same as no row)."""
        pool = self.connections
        conn = pool.get()
        try:
            n = int(conn.execute(_PRUNE, {"scope": self.scope}).rowcount)
        except BaseException:
            pool.put(conn, broken=True)
            raise
        pool.put(conn)
        return n

    def _execute(self, sql: str, params: dict[str, Any]) -> tuple[bool, int] | None:
        pool = self.connections
        conn = pool.get()
        try:
            row = conn.execute(sql, params, prepare=True).fetchone()
        except BaseException:
            pool.put(conn, broken=True)
            raise
        pool.put(conn)
        return None if row is None else (bool(row[0]), int(row[1]))


__all__ = ["KEY_MAX", "RateLimitCell", "SharedRateLimiter", "connections"]
