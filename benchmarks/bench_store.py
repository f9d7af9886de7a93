"""Durable share ingest: PostgreSQL and SQLite, batches of 10,000, against a naive baseline.

Each run starts from a freshly migrated, empty database, registers 1,000 miners and persists
200,000 shares through :func:`payouts.store.repositories.persist_shares` (committed = durable on
return). The naive baseline inserts 2,000 shares one INSERT + COMMIT at a time. Reported numbers
are medians over 3 runs, in shares per second. Targets: >= 100,000/s PostgreSQL, >= 50,000/s
SQLite.

Run: ``python -m benchmarks.bench_store`` (PostgreSQL from ``$PAYOUTS_TEST_POSTGRES_URL``, default
the local server; skipped with a note when unreachable).
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

import numpy as np
import sqlalchemy as sa

from payouts.accounting.shares import ShareBatch
from payouts.store import migrate
from payouts.store.engine import make_engine
from payouts.store.models import Share
from payouts.store.repositories import persist_shares

PG_URL = os.environ.get(
    "PAYOUTS_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
TOTAL = 200_000
BATCH = 10_000
NAIVE = 2_000
MINERS = 1_000
RUNS = 3

Report = Callable[[str, float], None]


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


def bench_batched(backend: str, seed: int) -> float:
    with _database(backend) as engine:
        batches = _batches(TOTAL, BATCH, _miner_ids(engine), seed)
        t0 = time.perf_counter()
        for b in batches:
            persist_shares(engine, b)
        elapsed = time.perf_counter() - t0
        # Idempotency check outside the timing: everything is stored exactly once.
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT COUNT(*) FROM shares").scalar_one()
        assert stored == TOTAL, stored
    return TOTAL / elapsed


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
    print(f"{name:<42} {shares_per_s:>12,.0f} shares/s", flush=True)


def run(report: Report = _print_report) -> dict[str, float]:
    """Measure every case; call ``report(name, median_shares_per_s)`` for each; return them."""
    results: dict[str, float] = {}
    backends = ["postgresql", "sqlite"]
    why = _pg_available()
    if why is not None:
        print(f"postgresql skipped: {PG_URL} unreachable ({why})")
        backends.remove("postgresql")
    for backend in backends:
        cases: list[tuple[str, Callable[[str, int], float]]] = [
            (f"{backend} persist_shares, batch {BATCH:,} (durable)", bench_batched),
            (f"{backend} naive INSERT+COMMIT per share", bench_naive),
        ]
        for name, fn in cases:
            median = statistics.median(fn(backend, seed) for seed in range(RUNS))
            results[name] = median
            report(name, median)
    return results


def main() -> None:
    print(
        f"store ingest: {TOTAL:,} shares in batches of {BATCH:,} (naive: {NAIVE:,} shares), "
        f"median of {RUNS} runs"
    )
    run()


if __name__ == "__main__":
    main()
