"""The served engine at pool scale (issue #11), on SQLite and PostgreSQL, each measure next to
the code path it replaced, in the same run:

1. **restart to serving** with 1,000,000 and 10,000,000 shares stored and a 1,000,000-share
   window: ``PoolService`` restored from its accounting snapshot plus the shares after it
   (target ≤ 2 s, in process), and the whole ``payouts serve`` process from exec to its first
   ``/v1/health`` answer (imports included); baseline: the replay of every stored share the
   service did before (``iter_shares`` into a fresh accountant), at 1M;
2. **publish_distribution and record_block at 100,000 miners with 10,000,000 ledger rows**
   (target ≤ 300 ms each); baseline: the same service with the ledger as it was (every line in
   the block's transaction, balances summed over the ledger);
3. **share ingest p99 while a 100,000-miner block is recorded** (target ≤ 50 ms): a thread
   ingests 1,000-share batches back to back while the block is recorded and its backlog written
   out in chunks (as ``payouts serve`` does); baseline: the block's lines in its transaction;
4. **peak memory** (RSS) of a process restoring 10,000,000 stored shares with a 1,000,000-share
   window (target ≤ 300 MiB).

Run: ``.venv/bin/python -m benchmarks.bench_served [--quick]`` (``--quick``: 10× smaller, for a
smoke run). PostgreSQL: ``$PAYOUTS_BENCH_POSTGRES_URL`` (default the local test server; its
part is skipped, said so, when unreachable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from benchmarks import summary
from payouts import service as service_module
from payouts.accounting.accountant import Accountant
from payouts.accounting.shares import ShareBatch
from payouts.distribution.fitting import FittedDistribution
from payouts.owed_table import OwedTable
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.store.engine import make_engine
from payouts.store.ledger import materialize_backlog
from payouts.store.migrate import upgrade
from payouts.store.shares import iter_shares

PG_URL = os.environ.get("PAYOUTS_BENCH_POSTGRES_URL",
                        "postgresql+psycopg://root@127.0.0.1:5432/test")
POOL = "0014" + "ab" * 20
REVENUE = 312_500_000
WINDOW = 1_000_000


def settings(data_dir: Path, url: str, window: int) -> Settings:
    return Settings(data_dir=data_dir, database_url=url, network="regtest",
                    accounting={"scheme": "pplns", "pplns_n": window},
                    pool={"payout_script": POOL, "fee_bps": 100},
                    distribution={"max_outputs_bytes": 6_500})


# -- building a store fast (bulk SQL, not the service: the service's paths are what we time) --


def _raw(engine: sa.Engine) -> Any:
    return engine.raw_connection()


def populate(engine: sa.Engine, miners: int, shares: int, ledger_rows: int) -> None:
    raw = _raw(engine)
    cur = raw.cursor()
    pg = engine.dialect.name == "postgresql"
    rng = np.random.default_rng(7)

    def copy_or_insert(table: str, cols: str, rows: Any, n_cols: int) -> None:
        if pg:
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
        else:
            cur.execute("BEGIN")
            cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({','.join('?' * n_cols)})",
                            rows)
        raw.commit()

    copy_or_insert("miners", "account, payout_script",
                   ((f"m{i}", b"\x51\x20" + i.to_bytes(32, "big")) for i in range(1, miners + 1)),
                   2)
    step = 1_000_000
    for start in range(0, shares, step):
        n = min(step, shares - start)
        mids = rng.integers(1, miners + 1, n).tolist()
        diffs = rng.integers(1_000, 100_000, n).tolist()
        copy_or_insert("shares", "share_key, miner_id, worker, difficulty, job_id, revenue, "
                       "time_ms", ((f"k{start + j}", mids[j], "w", diffs[j], "j", REVENUE,
                                    1_700_000_000_000 + start + j) for j in range(n)), 7)
    if ledger_rows:
        if pg:
            cur.execute("INSERT INTO ledger_entries (miner_id, amount, reason) SELECT "
                        f"1 + g % {miners}, 1000, 'dropped' FROM generate_series(0, "
                        f"{ledger_rows - 1}) g")
        else:
            cur.execute("BEGIN")
            cur.execute(f"WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE "
                        f"x < {ledger_rows - 1}) INSERT INTO ledger_entries (miner_id, amount, "
                        f"reason) SELECT 1 + x % {miners}, 1000, 'dropped' FROM g")
        cur.execute("INSERT INTO miner_balances (miner_id, owed) SELECT miner_id, SUM(amount) "
                    "FROM ledger_entries GROUP BY miner_id")
        raw.commit()
    raw.close()


@contextmanager
def store(backend: str, tmp: Path, name: str) -> Iterator[str]:
    """A fresh, migrated database URL on ``backend`` (dropped afterwards)."""
    if backend == "sqlite":
        (tmp / name).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{tmp / name / 'payouts.db'}"
        upgrade(make_engine(url))
        yield url
        shutil.rmtree(tmp / name, ignore_errors=True)
        return
    admin = sa.create_engine(PG_URL)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.engine.make_url(PG_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    upgrade(make_engine(url))
    try:
        yield url
    finally:
        with admin.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def pg_reachable() -> bool:
    try:
        with sa.create_engine(PG_URL, connect_args={"connect_timeout": 3}).connect() as c:
            c.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.OperationalError:
        return False


def ms(f: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = f()
    return (time.perf_counter() - t) * 1000, out


ROWS: list[tuple[str, str, float, str, str]] = []  # (measure, backend, value, target, baseline)


def report(measure: str, backend: str, value: float, unit: str, target: float,
           baseline: float | None = None) -> None:
    ok = "met" if value <= target else "MISSED"
    base = ("" if baseline is None
            else f"; baseline {baseline:,.0f} {unit} ({baseline / value:.1f}x)")
    print(f"  {measure} [{backend}]: {value:,.0f} {unit} (target <= {target:,.0f} {unit}, "
          f"{ok}){base}; load {os.getloadavg()[0]:.2f}", flush=True)
    ROWS.append((measure, backend, value, f"<= {target:g} {unit}", ok))
    summary.target(f"{backend}: {measure}", value, target, unit, at_least=False,
                   baseline="" if baseline is None else
                   f"{baseline:,.0f} {unit} before ({baseline / value:.1f}x)")


# -- 1. restart ----------------------------------------------------------------------------------


def restart(backend: str, tmp: Path, shares: int, with_baseline: bool) -> None:
    with store(backend, tmp, f"restart{shares}") as url:
        data = tmp / f"data-restart{shares}"
        data.mkdir(exist_ok=True)
        populate(make_engine(url), 100_000, shares, 0)
        s = settings(data, url, WINDOW)
        svc = PoolService(s)  # the first start: no snapshot yet, replays everything once
        svc.window.take_snapshot()
        t_in, again = ms(lambda: PoolService(s))
        assert isinstance(again, PoolService)
        assert again.accountant.share_count == min(WINDOW, shares)
        assert again.window.restored.snapshot_id is not None
        base = None
        if with_baseline:
            def replay_all() -> Accountant:
                acc = Accountant(s.accounting)
                for batch in iter_shares(make_engine(url)):
                    acc.ingest(batch)
                return acc

            base, acc = ms(replay_all)
            assert isinstance(acc, Accountant)
            assert acc.weights().weights == again.accountant.weights().weights
        report(f"restart, {shares:,} shares stored (in process)", backend, t_in, "ms", 2000,
               base)
        t_proc, cpu = serve_to_health(data, url)
        print(f"    (payouts serve's own CPU time until it answered: {cpu:,.0f} ms)")
        report(f"restart, {shares:,} shares stored (payouts serve: exec to /v1/health)",
               backend, t_proc, "ms", 2000)


def _cpu_ms(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def serve_to_health(data: Path, url: str) -> tuple[float, float]:
    """Wall time from exec to the first ``/v1/health`` answer, and the process's CPU time
    by then (on a loaded machine the two part)."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(data), "PAYOUTS_DATABASE_URL": url,
           "PAYOUTS_API__PORT": str(port), "PAYOUTS_ACCOUNTING__SCHEME": "pplns",
           "PAYOUTS_ACCOUNTING__PPLNS_N": str(WINDOW), "PAYOUTS_RETENTION__ENABLED": "false"}
    env.pop("PAYOUTS_CONFIG", None)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--log-level", "warning"],
                            env=env, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5).status_code:
                    return (time.perf_counter() - t) * 1000, _cpu_ms(proc.pid)
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise RuntimeError("payouts serve exited") from None
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# -- 2. publish and record at 100k miners ---------------------------------------------------------


def publish_and_record(backend: str, tmp: Path, miners: int, shares: int, ledger: int,
                       runs: int) -> None:
    with store(backend, tmp, "blocks") as url:
        data = tmp / "data-blocks"
        data.mkdir(exist_ok=True)
        populate(make_engine(url), miners, shares, ledger)
        s = settings(data, url, WINDOW)
        svc = PoolService(s)
        svc.publish_distribution(REVENUE)  # warm: the registry's first load, the balances
        pub, rec = [], []
        for i in range(runs):
            t, fitted = ms(lambda: svc.publish_distribution(REVENUE))
            pub.append(t)
            assert isinstance(fitted, FittedDistribution) and fitted.dropped
            did = fitted.distribution.distribution_id
            t, _ = ms(lambda i=i, did=did: svc.record_block(
                distribution_id=did, revenue=REVENUE, block_hash=uuid.uuid4().bytes * 2,
                height=1000 + i))
            rec.append(t)
            while materialize_backlog(svc.engine):
                pass
        base_pub, base_rec = baseline_publish_and_record(svc, runs)
        report(f"publish_distribution, {miners:,} miners, {ledger:,} ledger rows", backend,
               statistics.median(pub), "ms", 300, base_pub)
        report(f"record_block, {miners:,} miners, {ledger:,} ledger rows", backend,
               statistics.median(rec), "ms", 300, base_rec)


def _summed_balances(engine: sa.Engine, ids: Any = None) -> dict[int, int]:
    """The balances as the ledger computed them before miner_balances: SUM over every line."""
    with engine.connect() as c:
        rows = c.exec_driver_sql("SELECT miner_id, CAST(SUM(amount) AS BIGINT) FROM "
                                 "ledger_entries GROUP BY miner_id").all()
    return {int(m): int(b) for m, b in rows}


def baseline_publish_and_record(svc: PoolService, runs: int) -> tuple[float, float]:
    """The service with the ledger as it was: balances summed over every line, every line of
    a block written in the block's transaction."""
    orig_balances, orig_inline = svc._balances_at, service_module.LEDGER_INLINE_MAX
    svc._balances_at = lambda: (  # type: ignore[method-assign]
        OwedTable.of(_summed_balances(svc.engine)), -1)
    service_module.LEDGER_INLINE_MAX = 10**9
    try:
        pub, rec = [], []
        for i in range(runs):
            t, fitted = ms(lambda: svc.publish_distribution(REVENUE))
            pub.append(t)
            assert isinstance(fitted, FittedDistribution)
            did = fitted.distribution.distribution_id
            t, _ = ms(lambda i=i, did=did: svc.record_block(
                distribution_id=did, revenue=REVENUE, block_hash=uuid.uuid4().bytes * 2,
                height=2000 + i))
            rec.append(t)
        return statistics.median(pub), statistics.median(rec)
    finally:
        svc._balances_at = orig_balances  # type: ignore[method-assign]
        service_module.LEDGER_INLINE_MAX = orig_inline


# -- 3. ingest p99 while a block is recorded ------------------------------------------------------


def ingest_during_block(backend: str, tmp: Path, miners: int, inline: bool) -> None:
    with store(backend, tmp, f"ingest{int(inline)}") as url:
        data = tmp / f"data-ingest{int(inline)}"
        data.mkdir(exist_ok=True)
        populate(make_engine(url), miners, 200_000, 0)
        svc = PoolService(settings(data, url, WINDOW))
        fitted = svc.publish_distribution(REVENUE)
        stop = threading.Event()
        lat: list[float] = []
        rng = np.random.default_rng(3)
        seq = [0]

        def ingest() -> None:
            while not stop.is_set():
                n = 1000
                k = seq[0]
                seq[0] += n
                b = ShareBatch(key=[f"x{k + j}" for j in range(n)],
                               miner_id=rng.integers(1, miners + 1, n).astype(np.int64),
                               worker=["w"] * n, difficulty=np.full(n, 5000, np.int64),
                               job_id=["j"] * n, revenue=np.full(n, REVENUE, np.int64),
                               time_ms=np.arange(n, dtype=np.int64) + 1_800_000_000_000 + k)
                t = time.perf_counter()
                svc.ingest(b)
                lat.append((time.perf_counter() - t) * 1000)

        th = threading.Thread(target=ingest)
        sys.setswitchinterval(0.001)  # as payouts serve sets it (payouts.served.ServedPool)
        orig = service_module.LEDGER_INLINE_MAX
        if inline:
            service_module.LEDGER_INLINE_MAX = 10**9
        try:
            th.start()
            time.sleep(1.0)
            before = len(lat)
            svc.record_block(distribution_id=fitted.distribution.distribution_id,
                             revenue=REVENUE, block_hash=uuid.uuid4().bytes * 2, height=7)
            while True:  # as payouts serve's backlog loop: rest as long as each chunk took
                t = time.perf_counter()
                if not materialize_backlog(svc.engine):
                    break
                time.sleep(time.perf_counter() - t)
            time.sleep(0.2)
            during = lat[before:]
        finally:
            stop.set()
            th.join()
            service_module.LEDGER_INLINE_MAX = orig
        p99 = float(np.percentile(during, 99))
        label = "block's lines in its transaction (baseline)" if inline else "backlog"
        print(f"  ingest of 1,000-share batches while a {miners:,}-miner block is recorded "
              f"[{backend}, {label}]: {len(during)} batches, p50 "
              f"{statistics.median(during):.1f} ms, p99 {p99:.1f} ms, max {max(during):.1f} ms",
              flush=True)
        if not inline:
            ROWS.append((f"ingest p99 during a {miners:,}-miner block", backend, p99,
                         "<= 50 ms", "met" if p99 <= 50 else "MISSED"))


# -- 4. peak memory -------------------------------------------------------------------------------


def peak_memory(backend: str, tmp: Path, shares: int) -> None:
    with store(backend, tmp, "memory") as url:
        data = tmp / "data-memory"
        data.mkdir(exist_ok=True)
        populate(make_engine(url), 100_000, shares, 0)
        s = settings(data, url, WINDOW)
        PoolService(s).window.take_snapshot()
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent at fork, so the
        # child would report this benchmark's own footprint.
        code = (f"from benchmarks.bench_served import settings\n"
                f"from payouts.service import PoolService\n"
                f"from pathlib import Path\n"
                f"svc = PoolService(settings(Path({str(data)!r}), {url!r}, {WINDOW}))\n"
                f"hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
                f"print(svc.accountant.share_count, hwm.split()[1])\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        report(f"peak RSS restoring {shares:,} stored shares, {int(out[0]):,}-share window",
               backend, int(out[1]) / 1024, "MiB", 300)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10x smaller (smoke run)")
    ap.add_argument("--parts", default="restart,publish,ingest,memory",
                    help="comma-separated subset of restart, publish, ingest, memory")
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    scale = 10 if args.quick else 1
    wanted = args.backends.split(",")
    backends = [b for b in ("sqlite", "postgresql") if b in wanted and (
        b == "sqlite" or pg_reachable())]
    if "postgresql" in wanted and "postgresql" not in backends:
        print(f"PostgreSQL at {PG_URL} unreachable: its part is skipped")
    with tempfile.TemporaryDirectory(prefix="bench_served_") as d:
        tmp = Path(d)
        for backend in backends:
            print(f"{backend}:", flush=True)
            if "restart" in parts:
                restart(backend, tmp, 1_000_000 // scale, with_baseline=True)
                restart(backend, tmp, 10_000_000 // scale, with_baseline=False)
            if "publish" in parts:
                publish_and_record(backend, tmp, 100_000 // scale, 1_000_000 // scale,
                                   10_000_000 // scale, runs=3)
            if "ingest" in parts:
                for inline in (True, False):
                    ingest_during_block(backend, tmp, 100_000 // scale, inline)
            if "memory" in parts:
                peak_memory(backend, tmp, 10_000_000 // scale)
    print("\nsummary:")
    for measure, backend, value, target, ok in ROWS:
        print(f"  {ok:6} {measure} [{backend}]: {value:,.1f} ({target})")


if __name__ == "__main__":
    main()
