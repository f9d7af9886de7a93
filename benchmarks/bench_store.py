"""Durable share ingest: PostgreSQL and SQLite, batches of 10,000, against a naive baseline.

Keys are unordered (one random hash per share), as a pool's idempotency keys are; every case uses
:func:`payouts.store.repositories.persist_shares` (committed = durable on return) unless named
otherwise. Cases, each the median of 3 runs, in shares per second:

* ``empty``: a freshly migrated database, 1,000 miners, 200,000 shares (the table and its unique
  index grow across the 20 batches). Targets: >= 100,000/s PostgreSQL, >= 50,000/s SQLite.
* ``1M present``: the same 200,000 new shares into a table already holding >= 1,000,000 shares
  (preloaded once through ``persist_shares``, then each run adds its 200,000 on top).
* ``re-send``: the 200,000 shares of an ``empty`` run sent again; nothing is inserted and every
  call must return an empty index.
* PostgreSQL ``ON CONFLICT path``: the fallback used when a batch overlaps stored keys (read which
  keys exist, COPY the others into a staging table, ``INSERT … ON CONFLICT DO NOTHING``), forced
  for all-new batches. Staging + ``ON CONFLICT`` is how every batch was written before the
  optimistic COPY (55,250 shares/s in docs/BENCHMARKS.md), so this is the same-run reference.
* SQLite ``1M present, 4 MiB checkpoints``: the ``1M present`` case with SQLite's default
  ``wal_autocheckpoint`` (1,000 pages) instead of the store's 128 MiB, the same-run reference
  for that setting (a checkpoint after every batch: the random ``share_key`` index pages each
  batch dirties are written back to the database file and fsynced every time).
* ``naive``: 2,000 shares, one INSERT + COMMIT each (SQLAlchemy Core): the baseline.

Run: ``python -m benchmarks.bench_store`` (PostgreSQL from ``$PAYOUTS_TEST_POSTGRES_URL``, default
the local server; skipped with a note when unreachable). ``BENCH_STORE_PRELOAD=0`` skips the
``1M present`` cases; ``BENCH_STORE_BACKENDS=sqlite`` (comma-separated) measures only those.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from benchmarks.summary import target
from payouts.accounting.shares import ShareBatch
from payouts.accounting.validate import validate_batch
from payouts.store import migrate
from payouts.store.engine import make_engine
from payouts.store.models import Share
from payouts.store.repositories import persist_shares
from payouts.store.shares import Index, _insert_only_new

PG_URL = os.environ.get(
    "PAYOUTS_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
TOTAL = 200_000
BATCH = 10_000
NAIVE = 2_000
MINERS = 1_000
RUNS = 3
PRELOAD = int(os.environ.get("BENCH_STORE_PRELOAD", "1000000"))
BACKENDS = os.environ.get("BENCH_STORE_BACKENDS", "postgresql,sqlite").split(",")
# SQLite's own default, which make_engine raises (see WAL_AUTOCHECKPOINT_PAGES).
SQLITE_DEFAULT_CHECKPOINT = "PRAGMA wal_autocheckpoint=1000"

Report = Callable[[str, float], None]
Persist = Callable[[sa.Engine, ShareBatch], Index]


def _batches(total: int, batch: int, miner_ids: list[int], seed: int) -> list[ShareBatch]:
    """Realistic shares: keys are unordered (a hash per share), miners and workers mixed."""
    rng = np.random.default_rng(seed)
    out = []
    mids = np.array(miner_ids, dtype=np.int64)
    for start in range(0, total, batch):
        n = min(batch, total - start)
        salt = rng.integers(0, 2**63, size=n)
        out.append(
            ShareBatch(
                key=[f"{s:016x}:{start + i}" for i, s in enumerate(salt.tolist())],
                miner_id=rng.choice(mids, size=n),
                worker=[f"rig{w}" for w in rng.integers(0, 50, size=n).tolist()],
                difficulty=rng.integers(1, 1 << 20, size=n, dtype=np.int64),
                job_id=[f"{j:x}" for j in rng.integers(0, 1000, size=n).tolist()],
                revenue=np.full(n, 312_500_000, dtype=np.int64),
                time_ms=np.arange(start, start + n, dtype=np.int64) + 1_700_000_000_000,
            )
        )
    return out


@contextmanager
def _database(backend: str) -> Iterator[sa.Engine]:
    """A fresh, migrated store with MINERS registered miners; removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            try:
                yield _prepare(engine)
            finally:
                engine.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield _prepare(engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _prepare(engine: sa.Engine) -> sa.Engine:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO miners (account, payout_script) VALUES (:a, :s)"),
            [{"a": f"miner{i}", "s": b"\x00\x14" + bytes(20)} for i in range(MINERS)],
        )
    return engine


def _miner_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT id FROM miners ORDER BY id")]


def _ingest(engine: sa.Engine, batches: list[ShareBatch], persist: Persist) -> float:
    """Persist every batch in turn; return shares per second. Checks every row was new."""
    t0 = time.perf_counter()
    new = sum(persist(engine, b).size for b in batches)
    elapsed = time.perf_counter() - t0
    total = sum(len(b) for b in batches)
    assert new == total, (new, total)
    return total / elapsed


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM shares").scalar_one())


def _bench_empty(backend: str, seed: int, persist: Persist) -> float:
    with _database(backend) as engine:
        batches = _batches(TOTAL, BATCH, _miner_ids(engine), seed)
        rate = _ingest(engine, batches, persist)
        # Outside the timing: everything is stored exactly once.
        assert _count(engine) == TOTAL
    return rate


def bench_batched(backend: str, seed: int) -> float:
    return _bench_empty(backend, seed, persist_shares)


def bench_resend(backend: str, seed: int) -> float:
    """Every batch of an ``empty`` run sent a second time: all duplicates, nothing written."""
    with _database(backend) as engine:
        batches = _batches(TOTAL, BATCH, _miner_ids(engine), seed)
        _ingest(engine, batches, persist_shares)
        t0 = time.perf_counter()
        new = sum(persist_shares(engine, b).size for b in batches)
        elapsed = time.perf_counter() - t0
        assert new == 0 and _count(engine) == TOTAL
    return TOTAL / elapsed


def _on_conflict_path(engine: sa.Engine, batch: ShareBatch) -> Index:
    """The PostgreSQL fallback, forced: validation as in persist_shares, then the key read,
    staging COPY and ``INSERT … ON CONFLICT DO NOTHING`` it runs for an overlapping batch."""
    return _insert_only_new(engine, validate_batch(batch))[0]


def bench_on_conflict(backend: str, seed: int) -> float:
    return _bench_empty(backend, seed, _on_conflict_path)


def bench_preloaded(backend: str, sqlite_pragma: str | None = None) -> list[float]:
    """RUNS runs of TOTAL new shares each, into one table that already holds PRELOAD shares.

    ``sqlite_pragma`` runs on every new SQLite connection after make_engine's own settings.
    """
    with _database(backend) as engine:
        if sqlite_pragma is not None:
            engine.dispose()  # the pooled connections were made without it

            @sa.event.listens_for(engine, "connect")
            def _pragma(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute(sqlite_pragma)

        miners = _miner_ids(engine)
        # Preloaded keys come from their own seed: they interleave with the measured ones.
        for b in _batches(PRELOAD, BATCH, miners, seed=1_000):
            persist_shares(engine, b)
        if backend == "postgresql":
            # A steady-state table: statistics current, dead tuples none, a fresh checkpoint
            # behind it (so the measured batches pay the full-page writes a real server pays).
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE shares")
                conn.exec_driver_sql("CHECKPOINT")
        rates = []
        for seed in range(RUNS):
            present = _count(engine)
            rates.append(_ingest(engine, _batches(TOTAL, BATCH, miners, seed), persist_shares))
            assert _count(engine) == present + TOTAL
    return rates


def bench_naive(backend: str, seed: int) -> float:
    """One INSERT and one COMMIT per share, through SQLAlchemy Core (the obvious first try)."""
    with _database(backend) as engine:
        (batch,) = _batches(NAIVE, NAIVE, _miner_ids(engine), seed)
        rows = [
            {
                "share_key": k,
                "miner_id": m,
                "worker": w,
                "difficulty": d,
                "job_id": j,
                "revenue": r,
                "time_ms": t,
            }
            for k, m, w, d, j, r, t in zip(
                batch.key,
                batch.miner_id.tolist(),
                batch.worker,
                batch.difficulty.tolist(),
                batch.job_id,
                batch.revenue.tolist(),
                batch.time_ms.tolist(),
                strict=True,
            )
        ]
        stmt = sa.insert(Share)
        t0 = time.perf_counter()
        for row in rows:
            with engine.begin() as conn:
                conn.execute(stmt, row)
        elapsed = time.perf_counter() - t0
    return NAIVE / elapsed


def _pg_available() -> str | None:
    try:
        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        eng.dispose()
        return None
    except sa.exc.OperationalError as exc:
        return str(exc).splitlines()[0]


def _print_report(name: str, shares_per_s: float) -> None:
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"{name:<50} {shares_per_s:>12,.0f} shares/s   (load {load})", flush=True)


def run(report: Report = _print_report) -> dict[str, float]:
    """Measure every case; call ``report(name, median_shares_per_s)`` for each; return them."""
    results: dict[str, float] = {}
    backends = [b for b in ("postgresql", "sqlite") if b in BACKENDS]
    why = _pg_available() if "postgresql" in backends else None
    if why is not None:
        print(f"postgresql skipped: {PG_URL} unreachable ({why})")
        backends.remove("postgresql")
    for backend in backends:
        cases: list[tuple[str, Callable[[str, int], float]]] = [
            (f"{backend} persist_shares, batch {BATCH:,}, empty", bench_batched),
            (f"{backend} re-send of stored batches", bench_resend),
        ]
        if backend == "postgresql":
            cases.append((f"{backend} ON CONFLICT path, all new", bench_on_conflict))
        cases.append((f"{backend} naive INSERT+COMMIT per share", bench_naive))
        for name, fn in cases:
            median = statistics.median(fn(backend, seed) for seed in range(RUNS))
            results[name] = median
            report(name, median)
        if PRELOAD:
            name = f"{backend} persist_shares, {PRELOAD:,} present"
            results[name] = statistics.median(bench_preloaded(backend))
            report(name, results[name])
            naive = results[f"{backend} naive INSERT+COMMIT per share"]
            bound = 100_000.0 if backend == "postgresql" else 50_000.0
            target(f"durable ingest, {backend}, {PRELOAD:,} present", results[name], bound,
                   "shares/s", at_least=True,
                   baseline=f"naive {naive:,.0f}/s ({results[name] / naive:.0f}x)")
            if backend == "sqlite":
                name = f"{backend} persist_shares, {PRELOAD:,} present, 4 MiB checkpoints"
                results[name] = statistics.median(
                    bench_preloaded(backend, SQLITE_DEFAULT_CHECKPOINT)
                )
                report(name, results[name])
    return results


def main() -> None:
    print(
        f"store ingest: {TOTAL:,} shares in batches of {BATCH:,} (naive: {NAIVE:,} shares), "
        f"random keys, median of {RUNS} runs"
    )
    run()


if __name__ == "__main__":
    main()
