"""Rate limits shared through the store (payouts.store.rate_limits, issue 15): on PostgreSQL two
engines (two processes' worth of connection pools) on one schema share every limit, also under
concurrent writers; on SQLite the limit is the process's in-memory bucket."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payouts.ratelimit import TokenBucketLimiter, rate_limiter
from payouts.store.engine import make_engine
from payouts.store.rate_limits import SharedRateLimiter

# The shared limiter is the PostgreSQL one (SQLite: test_sqlite_is_in_memory).
ON_PG = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


@pytest.fixture
def pg(engine: Engine) -> Engine:
    return engine


@ON_PG
def test_burst_then_refused_with_the_wait(pg: Engine) -> None:
    lim = SharedRateLimiter(pg, "t-burst", rate=0.5, burst=3)  # one every 2 s
    assert [lim.take("1.2.3.4") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = lim.take("1.2.3.4")
    assert 1.5 < wait <= 2.0  # the 4th is ~2 s away (one emission interval)
    assert lim.take("5.6.7.8") == 0.0  # another client has its own cell
    with pg.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT key FROM rate_limits WHERE scope = 't-burst' ORDER BY key")).all()
    assert [r[0] for r in rows] == ["1.2.3.4", "5.6.7.8"]  # a refusal wrote no row


@ON_PG
def test_two_processes_share_the_limit(pg: Engine) -> None:
    """Two engines (each what one process has) on one schema: the burst holds on the sum."""
    other = make_engine(pg.url)
    try:
        a = SharedRateLimiter(pg, "t-sum", rate=0.01, burst=10)
        b = SharedRateLimiter(other, "t-sum", rate=0.01, burst=10)
        results = [(a if i % 2 else b).take("9.9.9.9") for i in range(30)]
        assert sum(w == 0.0 for w in results) == 10
        assert results[:10] == [0.0] * 10 and all(w > 0 for w in results[10:])
        # Each in memory alone would have let 10 through each: 20.
        mem = [TokenBucketLimiter(0.01, 10), TokenBucketLimiter(0.01, 10)]
        assert sum(mem[i % 2].take("x") == 0.0 for i in range(30)) == 20
    finally:
        other.dispose()


@ON_PG
def test_concurrent_writers_never_exceed_the_limit(pg: Engine) -> None:
    """8 threads on two engines race for one key: exactly ``burst`` requests pass."""
    other = make_engine(pg.url)
    try:
        lims = [SharedRateLimiter(e, "t-race", rate=0.01, burst=25) for e in (pg, other)]
        passed: list[int] = []
        start = threading.Barrier(8)

        def worker(i: int) -> None:
            start.wait()
            n = sum(lims[i % 2].take("k") == 0.0 for _ in range(20))
            passed.append(n)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(passed) == 25  # 160 tries, 25 through
    finally:
        other.dispose()


@ON_PG
def test_refills_at_the_rate_and_prunes_full_cells(pg: Engine) -> None:
    lim = SharedRateLimiter(pg, "t-refill", rate=20.0, burst=2)  # one every 50 ms
    assert [lim.take("c") for _ in range(2)] == [0.0, 0.0]
    assert lim.take("c") > 0
    time.sleep(0.06)
    assert lim.take("c") == 0.0  # one came back
    time.sleep(0.25)  # the cell is full again: the same as no row
    assert lim.prune() == 1
    assert [lim.take("c") for _ in range(2)] == [0.0, 0.0]


@ON_PG
def test_falls_back_to_memory_while_the_database_is_down(
    pg: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    broken = make_engine(pg.url.set(port=1))  # nothing listens there
    try:
        lim = SharedRateLimiter(broken, "t-down", rate=0.01, burst=2)
        assert [lim.take("d") == 0.0 for _ in range(3)] == [True, True, False]
        assert "the database is unreachable" in caplog.text
    finally:
        broken.dispose()


def test_sqlite_is_in_memory(engine: Engine, backend: str) -> None:
    lim = rate_limiter(engine, "api", 1.0, 2)
    if backend == "sqlite":
        assert isinstance(lim, TokenBucketLimiter) and not lim.shared
    else:
        assert isinstance(lim, SharedRateLimiter) and lim.shared


@ON_PG
def test_bad_limits_are_refused(pg: Engine) -> None:
    for rate, burst in ((0.0, 1), (1.0, 0), (-1.0, 5)):
        with pytest.raises(ValueError, match="rate must be"):
            SharedRateLimiter(pg, "t-bad", rate, burst)
    with pytest.raises(ValueError, match="scope"):
        SharedRateLimiter(pg, "x" * 33, 1.0, 1)
