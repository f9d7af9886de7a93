"""Benchmark of payouts.accounting: ingest rate, weights read time, memory, naive baseline.

(a) ingest of columnar batches (default 100 × 100,000 shares, 100,000 miners) into a TIDES
    accountant with value weighting (window ≈ half of the log, so the second half also evicts),
    against the naive baseline "rescan the window per block" (per-miner weights recomputed from
    scratch with Python ints);
(b) with the window moved to ~10,000,000 shares: one incremental batch, then ``weights()`` for
    100,000 miners; median of several runs;
(c) peak memory: tracemalloc peak and ru_maxrss.

Run: ``.venv/bin/python -m benchmarks.bench_accounting`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from payouts.accounting.accountant import Accountant
from payouts.accounting.shares import ShareBatch
from payouts.accounting.windows import MinerWeights, TidesWindow
from payouts.settings import AccountingSettings

MiB = 1 << 20


class BatchSource:
    """Random but realistic batches: vardiff target difficulties 2^16..2^20, template revenue
    3.125 BTC + 0..0.5 BTC of fees, 100,000 miners. Keys are unique inside a batch (what the
    validation checks); they are reused across batches to keep generation out of the way."""

    def __init__(self, batch: int, miners: int, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        self.miners = miners
        self.keys = [f"share-{i}" for i in range(batch)]
        self.workers = ["w"] * batch
        self.jobs = ["j"] * batch
        self.t = 0

    def next(self) -> ShareBatch:
        n, rng = self.batch, self.rng
        self.t += n
        return ShareBatch(
            key=self.keys,
            miner_id=rng.integers(0, self.miners, n, dtype=np.int64),
            worker=self.workers,
            difficulty=rng.integers(1 << 16, 1 << 20, n, dtype=np.int64),
            job_id=self.jobs,
            revenue=312_500_000 + rng.integers(0, 50_000_000, n, dtype=np.int64),
            time_ms=np.arange(self.t - n, self.t, dtype=np.int64),
        )


def naive_rescan(acc: Accountant) -> tuple[float, int, int]:
    """The baseline: per-miner weights from scratch over the current window, Python ints."""
    start, end = acc.window.start, acc.window.end
    t0 = time.perf_counter()
    weights: dict[int, int] = {}
    get = weights.get
    ids_of = acc.log.miners.ids
    for piece in acc.log.pieces(start, end):
        ids = ids_of(piece.codes).tolist()
        for m, d, r in zip(ids, piece.difficulty.tolist(), piece.revenue.tolist(), strict=True):
            weights[m] = get(m, 0) + d * r
    order = sorted(weights)
    result = [weights[m] for m in order]
    elapsed = time.perf_counter() - t0
    return elapsed, len(result), sum(result)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds: the machine is shared, so CPU time is reported next to wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.1f} ms"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--shares", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--miners", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=7, help="runs of (b)")
    ap.add_argument("--naive-runs", type=int, default=3)
    args = ap.parse_args(argv)

    mean_d = ((1 << 16) + (1 << 20)) // 2
    k = 8
    # (a): window ≈ half the log, so the second half of the ingest also evicts
    src = BatchSource(args.batch, args.miners)
    tracemalloc.start()
    acc = Accountant(
        AccountingSettings(scheme="tides", tides_k=k, value_weighting=True),
        network_difficulty=args.shares // 2 * mean_d // k,
    )
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(args.shares // args.batch):
        b = src.next()
        w, c = _timed(lambda b=b: acc.ingest(b))  # type: ignore[misc]
        wall.append(w)
        cpu.append(c)
    print(
        f"(a) ingest {len(wall)} × {args.batch:,} shares, {args.miners:,} miners, TIDES k={k}, "
        f"value weighting on; window {acc.share_count:,} shares at the end"
    )
    print(
        f"    median batch: wall {_ms(wall)} = {args.batch / statistics.median(wall):,.0f} "
        f"shares/s, CPU {_ms(cpu)} = {args.batch / statistics.median(cpu):,.0f} shares/s; "
        f"whole run {len(acc.log) / sum(wall):,.0f} shares/s wall"
    )

    # (b): move the window back over ~the whole log (incremental: only the entering rows)
    tides = acc.tides
    assert isinstance(tides, TidesWindow)
    before = acc.share_count
    d_full = tides.difficulty_sum * len(acc.log) // max(1, acc.share_count) // k
    w, c = _timed(lambda: acc.set_network_difficulty(d_full))
    print(
        f"(b) D change moves the window {before:,} → {acc.share_count:,} shares: "
        f"wall {w * 1e3:.0f} ms, CPU {c * 1e3:.0f} ms"
    )
    # tracemalloc traces every Python allocation and would distort the timings below: stop it
    # here, once the log and the ~10M-share window are fully built
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    upd_w: list[float] = []
    upd_c: list[float] = []
    read_w: list[float] = []
    read_c: list[float] = []
    result: list[MinerWeights] = []
    for _ in range(args.runs):
        b = src.next()
        w, c = _timed(lambda b=b: acc.ingest(b))  # type: ignore[misc]
        upd_w.append(w)
        upd_c.append(c)
        result.clear()
        w, c = _timed(lambda: result.append(acc.weights()))
        read_w.append(w)
        read_c.append(c)
    n_miners = len(result[0].miner_ids)
    print(
        f"    then {args.runs} × (one {args.batch:,}-share batch + weights()) on a "
        f"{acc.share_count:,}-share window, {n_miners:,} miners with weight:"
    )
    print(f"    batch update: wall {_ms(upd_w)}, CPU {_ms(upd_c)}")
    print(
        f"    weights():    wall {_ms(read_w)}, CPU {_ms(read_c)} "
        f"(wall runs: {', '.join(f'{x * 1e3:.1f}' for x in read_w)})"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"(c) memory: log hot columns {acc.log.nbytes / MiB:.0f} MiB for {len(acc.log):,} "
        f"shares; tracemalloc current {current / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB; "
        f"ru_maxrss {rss / MiB:.0f} MiB"
    )

    # naive baseline over the same ~10M-share window
    gc.collect()
    naive = []
    for _ in range(args.naive_runs):
        t, n, s = naive_rescan(acc)
        naive.append(t)
        assert n == n_miners and s == acc.total_weight, "naive and incremental disagree"
    med = statistics.median(naive)
    inc = statistics.median(upd_w) + statistics.median(read_w)
    print(
        f"(a') naive rescan per block (Python ints, same {acc.share_count:,}-share window): "
        f"median {med:.2f} s wall = {acc.share_count / med:,.0f} shares/s; incremental batch + "
        f"weights {inc * 1e3:.1f} ms wall ({med / inc:,.0f}× less); results identical"
    )


if __name__ == "__main__":
    main()
