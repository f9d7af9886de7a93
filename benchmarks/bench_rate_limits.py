"""What a rate limit shared through PostgreSQL costs per request (issue 15), against the
in-memory token bucket in the same run.

Cases, each the median of 5 runs, per ``take()`` (one request checked and counted):

* ``memory``: :class:`payouts.ratelimit.TokenBucketLimiter` (one process; the baseline).
* ``shared``: :class:`payouts.store.rate_limits.SharedRateLimiter`: one
  ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on an autocommit connection with
  ``synchronous_commit = off``.
* ``shared, synchronous_commit on``: the same statement waiting for its WAL flush (the
  database's default), the reference for that choice.
* ``shared, refused``: requests over the limit (the UPSERT updates nothing; the same
  statement reads the wait).
* ``SQLAlchemy connect() per take``: the same UPSERT through ``engine.connect()`` (checkout,
  statement, ROLLBACK on return), the first design, the reference for the driver connections.

Single thread, 10,000 client keys round robin (a cell per client, as the API keys by address),
2,000 calls a run; then 4 threads on two engines (two frontends' pools) at once, distinct keys
and all on one key (row-lock contention), as aggregate checks per second.

Then the same through the API: GET ``/v1/miners/{account}`` of an unknown account (a public,
rate-limited route: limit, one indexed read, 404) through FastAPI in process
(``TestClient``), 300 requests a run, median of 3, with the limit off, in memory, and
shared, on one PostgreSQL store.

Run: ``python -m benchmarks.bench_rate_limits`` (PostgreSQL from
``$PAYOUTS_TEST_POSTGRES_URL``, default the local server; a fresh schema, dropped at the end).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from payouts.ratelimit import RateLimiter, TokenBucketLimiter
from payouts.store import migrate
from payouts.store.engine import make_engine
from payouts.store.rate_limits import _TAKE, SharedRateLimiter

PG_URL = os.environ.get(
    "PAYOUTS_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
CALLS = 2_000
API_CALLS = 300
RUNS = 5
KEYS = [f"10.{i >> 8 & 255}.{i & 255}.1" for i in range(10_000)]


class RoundTrip:
    """``SELECT 1`` on one of the limiter's connections: the floor a database check costs."""

    shared = True
    rate = 1e9
    burst = 10**9

    def __init__(self, lim: SharedRateLimiter) -> None:
        self.connections = lim.connections

    def take(self, key: str) -> float:
        conn = self.connections.get()
        try:
            conn.execute("SELECT 1", prepare=True).fetchone()
        finally:
            self.connections.put(conn)
        return 0.0


class ConnectPerTake:
    """The first design: the UPSERT through ``engine.connect()`` on an autocommit engine
    with ``synchronous_commit = off`` (pool checkout, statement, ROLLBACK on return) -- the
    reference for the driver
    connections :class:`SharedRateLimiter` keeps."""

    shared = True
    rate = 1e9
    burst = 10**9

    def __init__(self, url: sa.URL) -> None:
        self.engine = make_engine(url, isolation_level="AUTOCOMMIT")

        @sa.event.listens_for(self.engine, "connect")
        def _off(dbapi_conn: Any, _record: Any) -> None:  # as SharedRateLimiter's
            dbapi_conn.execute("SET synchronous_commit = off")
        self.sql = sa.text(_TAKE.replace("%(", ":").replace(")s", ""))

    def take(self, key: str) -> float:
        with self.engine.connect() as conn:
            row = conn.execute(self.sql, {"scope": "bench-connect", "key": key,
                                          "t": 1, "tau": 10**15}).first()
        return 0.0 if row is not None and row[0] else 1.0


def per_call_us(lim: RateLimiter, keys: list[str]) -> float:
    """Median over RUNS of the mean µs per take() over CALLS calls."""
    runs = []
    for r in range(RUNS):
        t0 = time.perf_counter()
        for i in range(CALLS):
            lim.take(keys[(r * CALLS + i) % len(keys)])
        runs.append((time.perf_counter() - t0) / CALLS * 1e6)
    return statistics.median(runs)


def threaded_rate(make: Callable[[int], RateLimiter], same_key: bool, threads: int = 4) -> float:
    """Aggregate take()/s of ``threads`` threads, each its own limiter from ``make(i)``."""
    lims = [make(i) for i in range(threads)]
    start = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        start.wait()
        for n in range(CALLS):
            lims[i].take("one" if same_key else KEYS[(i * CALLS + n) % len(KEYS)])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return threads * CALLS / (time.perf_counter() - t0)


def api_case(url: sa.URL) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from payouts.service import PoolService
    from payouts.settings import Settings

    svc = PoolService(Settings(database_url=url.render_as_string(hide_password=False)))
    apps = {"off": create_app(svc, rate_limit=None)}
    apps["memory"] = create_app(svc, rate_limit=1e9, rate_burst=10**9)
    apps["memory"].state.limiter = TokenBucketLimiter(1e9, 10**9)  # as on SQLite
    apps["shared"] = create_app(svc, rate_limit=1e9, rate_burst=10**9)
    assert apps["shared"].state.limiter.shared
    res: dict[str, float] = {}
    for name, app in apps.items():
        with TestClient(app) as http:
            for _ in range(100):
                assert http.get("/v1/miners/nobody").status_code == 404
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(API_CALLS):
                    http.get("/v1/miners/nobody")
                runs.append((time.perf_counter() - t0) / API_CALLS * 1e6)
            res[name] = statistics.median(runs)
    svc.engine.dispose()
    print(f"GET /v1/miners/nobody in process (TestClient), µs per request, median of 3 x "
          f"{API_CALLS}:")
    for name, us in res.items():
        extra = "" if name == "off" else f"   (+{us - res['off']:.0f} µs vs off)"
        print(f"  limit {name:7s} {us:8.0f} µs{extra}")


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    admin = sa.create_engine(PG_URL)
    schema = f"payouts_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL at {PG_URL} unreachable, skipped: {exc}")
        return
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    engines = [make_engine(url), make_engine(url)]
    try:
        migrate.upgrade(engines[0])
        big = 1e9  # never refuses: every call is a counted, let-through request
        mem = per_call_us(TokenBucketLimiter(big, 10**9), KEYS)
        shared = SharedRateLimiter(engines[0], "bench", big, 10**9)
        per_call_us(shared, KEYS)  # warm: every key's row exists, as in steady state
        sh = per_call_us(shared, KEYS)
        rt = per_call_us(RoundTrip(shared), KEYS)
        sync_engine = make_engine(url)
        sync = SharedRateLimiter(sync_engine, "bench-sync", big, 10**9)
        conn = sync.connections.get()
        conn.execute("SET synchronous_commit = on")  # the database's default
        sync.connections.put(conn)
        per_call_us(sync, KEYS[:1000])
        sy = per_call_us(sync, KEYS[:1000])
        old = ConnectPerTake(url)
        per_call_us(old, KEYS[:1000])
        co = per_call_us(old, KEYS[:1000])
        old.engine.dispose()
        refused = SharedRateLimiter(engines[0], "bench-refused", 0.001, 1)
        for k in KEYS:
            refused.take(k)  # every cell now empty for ~1000 s
        rf = per_call_us(refused, KEYS)
        print(f"per take(), median of {RUNS} runs of {CALLS:,} calls, 10,000 keys:")
        print(f"  memory (baseline)                 {mem:8.2f} µs")
        print(f"  shared                            {sh:8.2f} µs   ({sh / mem:,.0f}× memory)")
        print(f"  shared, synchronous_commit on     {sy:8.2f} µs   ({sy / sh:.1f}× shared)")
        print(f"  shared, refused                   {rf:8.2f} µs")
        print(f"  SELECT 1 round trip (the floor)   {rt:8.2f} µs")
        print(f"  SQLAlchemy connect() per take     {co:8.2f} µs   ({co / sh:.1f}× shared)")

        def on(i: int) -> RateLimiter:
            return SharedRateLimiter(engines[i % 2], "bench-threads", big, 10**9)

        distinct = threaded_rate(on, same_key=False)
        one = threaded_rate(on, same_key=True)
        mem_lim = TokenBucketLimiter(big, 10**9)
        mem_threads = threaded_rate(lambda i: mem_lim, same_key=False)
        print("4 threads on two engines (two frontends), aggregate:")
        print(f"  shared, distinct keys   {distinct:10,.0f} checks/s")
        print(f"  shared, one key         {one:10,.0f} checks/s (row lock: serialized)")
        print(f"  memory, distinct keys   {mem_threads:10,.0f} checks/s")
        sync_engine.dispose()
        api_case(url)
    finally:
        for e in engines:
            e.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


if __name__ == "__main__":
    main()
