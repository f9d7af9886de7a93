"""Read models of the dashboards (docs/dashboards.md): the miner page (public data only) and
the operator page, computed in the domain like those of :mod:`payouts.views`; the API's page
routes only render them.

The miner page is the hot one (≤ 100 ms with 100,000 miners and 10,000,000 shares stored,
issue #16): its hashrate per worker comes from the ``worker_hashrate`` buckets and its blocks
from the payee index (:mod:`payouts.dashboard_index` keeps both), one indexed read each; the
window share is the accountant's, live.

On a member of a cluster (docs/deployment.md), which holds no accountant, the window's figures
come from the view the leader publishes (:mod:`payouts.published_view`): ``miner_dashboard``
takes them through ``window_stats`` and :func:`published_window_summary` summarises that view;
everything else on the pages is read from the database, as on a single process.
"""

from __future__ import annotations

import heapq
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from payouts.accounting.accountant import Accountant, MinerWindowStats
from payouts.distribution.amounts import compute_outputs
from payouts.distribution.fitting import FittedDistribution
from payouts.errors import ValidationError
from payouts.settlement.lifecycle_store import load_settlements, load_txs
from payouts.settlement.payout_view import coinbase_amounts, landings
from payouts.store import dashboard as dash
from payouts.store import repositories as repo
from payouts.store.ledger import BlockRecord, get_blocks, miner_balance
from payouts.tx.output_scripts import sigop_cost
from payouts.views import MinerShares, ViewedPool, WindowView, miner

#: How far back the miner page charts hashrate by default, and the most it reaches.
CHART_SPAN_MS = 86_400_000
CHART_SPAN_MAX_MS = 7 * 86_400_000
#: Payouts shown on one miner page (newest first).
PAYOUTS_SHOWN = 100


# -- the window's per-miner figures, one pass for every miner ---------------------------------

#: How old a snapshot of the window's per-miner figures a page may show (seconds); older, the
#: page reads its miner live (one pass over the window's rows: ~30 ms at 10M shares).
STATS_MAX_AGE = 10.0
_DIGIT_BITS = 21  # difficulty split in 21-bit digits: each per-miner float64 sum stays exact


@dataclass(frozen=True, slots=True)
class WindowStatsSnapshot:
    """Every miner's shares and summed difficulty in the window, and the window's span, as of
    ``taken_at`` (monotonic seconds) and window ``version``; weights as of then too."""

    version: tuple[int, int, int, int]
    taken_at: float
    wall_ms: int
    window_shares: int
    total_weight: int
    span_ms: int
    counts: dict[int, int]
    difficulty: dict[int, int]
    weights: dict[int, int]

    def stats(self, miner_id: int) -> MinerWindowStats:
        return MinerWindowStats(self.window_shares, self.counts.get(miner_id, 0),
                                self.difficulty.get(miner_id, 0),
                                self.weights.get(miner_id, 0), self.total_weight, self.span_ms)


_snapshots: weakref.WeakKeyDictionary[Accountant, WindowStatsSnapshot] = (
    weakref.WeakKeyDictionary())
_snapshot_lock = threading.Lock()


def window_version(acc: Accountant) -> tuple[int, int, int, int]:
    w = acc.window
    return (w.start, w.end, acc.share_count, acc.total_weight)


def take_window_stats(acc: Accountant) -> WindowStatsSnapshot:
    """One pass over the window's rows for every miner: ``bincount`` of the share counts and
    of the difficulty's 21-bit digits (each sum < 2^53 up to 2^32 rows: exact in float64),
    joined as Python ints. ~0.1 s at 10M rows; :mod:`payouts.dashboard_index` takes one when
    the window moved, at most every cycle."""
    version = window_version(acc)
    weights = acc.weights()
    start, end = version[0], version[1]
    n_codes = len(acc.log.miners)
    counts = np.zeros(n_codes, dtype=np.int64)
    digits = [np.zeros(n_codes, dtype=np.float64) for _ in range(3)]
    t_min: int | None = None
    t_max: int | None = None
    for piece in acc.log.pieces(start, end):
        if not len(piece.codes):
            continue
        lo, hi = int(piece.time_ms.min()), int(piece.time_ms.max())
        t_min = lo if t_min is None else min(t_min, lo)
        t_max = hi if t_max is None else max(t_max, hi)
        counts += np.bincount(piece.codes, minlength=n_codes)[:n_codes]
        d = piece.difficulty.view(np.uint64)
        for k in range(3):
            part = ((d >> np.uint64(k * _DIGIT_BITS)) & np.uint64((1 << _DIGIT_BITS) - 1))
            digits[k] += np.bincount(piece.codes, weights=part.astype(np.float64),
                                     minlength=n_codes)[:n_codes]
    ids = acc.log.miners.ids(np.arange(n_codes, dtype=np.int32)).tolist()
    parts = [dg.astype(np.uint64).tolist() for dg in digits]
    difficulty = {}
    count_of = {}
    for code, miner_id in enumerate(ids):
        n = int(counts[code])
        if n:
            count_of[miner_id] = n
            difficulty[miner_id] = (parts[0][code] + (parts[1][code] << _DIGIT_BITS)
                                    + (parts[2][code] << (2 * _DIGIT_BITS)))
    span = t_max - t_min if t_min is not None and t_max is not None else 0
    snap = WindowStatsSnapshot(
        version, time.monotonic(), int(time.time() * 1000), end - start, version[3], span,
        count_of, difficulty, dict(zip(weights.miner_ids.tolist(), weights.weights, strict=True)))
    with _snapshot_lock:
        _snapshots[acc] = snap
    return snap


def refresh_window_stats(pool: ViewedPool) -> bool:
    """Take a snapshot when the window moved since the last one; whether one was taken."""
    acc = pool.accountant
    with _snapshot_lock:
        snap = _snapshots.get(acc)
    if snap is not None and snap.version == window_version(acc):
        return False
    take_window_stats(acc)
    return True


def window_stats_current(pool: ViewedPool) -> bool:
    """Whether the snapshot is of the window as it is now."""
    acc = pool.accountant
    with _snapshot_lock:
        snap = _snapshots.get(acc)
    return snap is not None and snap.version == window_version(acc)


def miner_window_stats(pool: ViewedPool, miner_id: int) -> tuple[MinerWindowStats, int | None]:
    """``miner_id``'s window figures and, when they come from a snapshot of a window that has
    moved since, the wall time (ms) they are as of (None: live)."""
    acc = pool.accountant
    with _snapshot_lock:
        snap = _snapshots.get(acc)
    if snap is not None:
        if snap.version == window_version(acc):
            return snap.stats(miner_id), None
        if time.monotonic() - snap.taken_at <= STATS_MAX_AGE:
            return snap.stats(miner_id), snap.wall_ms
    return acc.miner_stats(miner_id), None


@dataclass(frozen=True, slots=True)
class WorkerSeries:
    """One worker's hashrate over time: ``points`` are (bucket start ms, shares, summed target
    difficulty) of the buckets it has shares in, oldest first (each bucket ``bucket_ms``
    long)."""

    worker: str
    points: tuple[tuple[int, int, int], ...]

    @property
    def shares(self) -> int:
        return sum(p[1] for p in self.points)

    @property
    def last_ms(self) -> int:
        return self.points[-1][0] if self.points else 0

    def hashrate_hs(self, since_ms: int, until_ms: int) -> int:
        """Hashes per second the shares of buckets starting in [since, until) stand for (a
        share of difficulty d is d·2^32 hashes), integer."""
        d = sum(p[2] for p in self.points if since_ms <= p[0] < until_ms)
        return d * (1 << 32) * 1000 // max(until_ms - since_ms, 1)


@dataclass(frozen=True, slots=True)
class MinerPayout:
    """What ``block`` paid the miner: ``amount`` sat; where, once known (``txid``/``vout``,
    in the coinbase when ``role`` is None, else in the settlement tx (``role``, ``seq``)) and
    that place's ``status`` (the tx's, or the block's for a coinbase output); ``level``: a CTV
    leaf's depth in the fan-out tree (the exit path has ``level + 1`` transactions)."""

    block: BlockRecord
    mode: str | None
    phase: str | None
    amount: int
    txid: bytes | None
    vout: int | None
    role: str | None
    status: str
    level: int | None


@dataclass(frozen=True, slots=True)
class MinerDashboard:
    """Everything the miner page shows, public data only."""

    miner: repo.MinerRecord
    shares: MinerShares
    stats_as_of_ms: int | None  # None: the window's figures are live
    owed: int
    bucket_ms: int
    since_ms: int
    until_ms: int
    workers: tuple[WorkerSeries, ...]
    payouts: tuple[MinerPayout, ...]
    more_payouts: bool

    def total_series(self) -> list[tuple[int, int]]:
        """(bucket start ms, hashrate H/s) of all workers together, every bucket of the span
        (0 where none had shares)."""
        per: dict[int, int] = {}
        for w in self.workers:
            for b, _n, d in w.points:
                per[b] = per.get(b, 0) + d
        start = self.since_ms - self.since_ms % self.bucket_ms
        return [(b, per.get(b, 0) * (1 << 32) * 1000 // self.bucket_ms)
                for b in range(start, self.until_ms, self.bucket_ms)]


def _payouts_indexed(pool: ViewedPool, m: repo.MinerRecord, limit: int
                     ) -> tuple[list[MinerPayout], set[int]]:
    rows = dash.miner_payees(pool.engine, m.id, limit + 1)
    blocks = get_blocks(pool.engine, [r.block_id for r in rows])
    txs = dash.tx_rows(pool.engine, [(r.block_id, r.role, r.seq) for r in rows
                                     if r.role is not None and r.seq is not None])
    settled = dash.settlement_modes(pool.engine, [r.block_id for r in rows])
    out = []
    for r in rows:
        b = blocks[r.block_id]
        mode, phase = settled.get(r.block_id, (None, None))
        tx = txs.get((r.block_id, r.role or "", r.seq if r.seq is not None else -1))
        status = str(b.status) if r.role is None else (tx[0] if tx else "unknown")
        out.append(MinerPayout(b, mode, phase, r.amount, r.txid, r.vout, r.role, status,
                               tx[1] if tx and r.role == "fanout" else None))
    return out, {r.block_id for r in rows}


#: A miner's window figures by miner id and the wall time (ms) they are as of (None: live).
WindowStatsSource = Callable[[int], tuple[MinerWindowStats, int | None]]


def miner_dashboard(pool: ViewedPool, account: str, *, span_ms: int = CHART_SPAN_MS,
                    now_ms: int, limit: int = PAYOUTS_SHOWN,
                    window_stats: WindowStatsSource | None = None) -> MinerDashboard:
    """The miner page's figures: the window share (the accountant's, live; on a cluster member
    ``window_stats``, the leader's published view), the owed balance,
    hashrate per worker over ``span_ms`` up to ``now_ms`` from the hashrate buckets, and the
    newest ``limit`` blocks that paid the miner from the payee index
    (:mod:`payouts.dashboard_index`); blocks newer than the index are read the slow way
    (:func:`payout_history`'s, one block at a time)."""
    if not 0 < span_ms <= CHART_SPAN_MAX_MS:
        raise ValidationError(f"span must be within (0, {CHART_SPAN_MAX_MS}] ms")
    m = miner(pool, account)
    stats, as_of = (window_stats(m.id) if window_stats is not None
                    else miner_window_stats(pool, m.id))
    shares = MinerShares(m, pool.settings.accounting.scheme, stats)
    found = miner_balance(pool.engine, m.account)
    owed = found[2] if found is not None else 0
    since = now_ms - span_ms
    by_worker: dict[str, list[tuple[int, int, int]]] = {}
    for k in dash.miner_buckets(pool.engine, m.id, since - since % dash.BUCKET_MS, now_ms):
        by_worker.setdefault(k.worker, []).append((k.bucket_ms, k.shares, k.difficulty))
    workers = tuple(WorkerSeries(w, tuple(p)) for w, p in sorted(by_worker.items()))
    paid, indexed = _payouts_indexed(pool, m, limit)
    pending = get_blocks(pool.engine, dash.unindexed_block_ids(pool.engine))
    settlements_now = load_settlements(pool.engine) if pending else {}
    for b in pending.values():
        if b.distribution_id is None or b.id in indexed:
            continue
        fitted = pool.distribution(b.distribution_id)
        if m.account not in fitted.accounts:
            continue
        s = settlements_now.get(b.id)
        landed = landings(b, fitted, s, load_txs(pool.engine, b.id) if s else []).get(m.account)
        amount = landed.amount if landed else coinbase_amounts(fitted, b.revenue)[m.account]
        paid.append(MinerPayout(
            b, s.mode if s else None, s.phase if s else None, amount,
            landed.txid if landed else None, landed.vout if landed else None,
            None, str(landed.status if landed else b.status), None))
    paid.sort(key=lambda p: p.block.id, reverse=True)
    return MinerDashboard(m, shares, as_of, owed, dash.BUCKET_MS, since, now_ms, workers,
                          tuple(paid[:limit]), len(paid) > limit)



# -- the operator page -------------------------------------------------------------------------

#: Miners listed by weight on the operator page, and payees of the distribution.
TOP_SHOWN = 25


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """The window in brief: its size, the miners in it and the heaviest ``top`` (account,
    weight), heaviest first; the difficulty the window uses and the node's last one (None
    before the node answered)."""

    share_count: int
    total_weight: int
    miners: int
    top: tuple[tuple[str, int], ...]
    window_difficulty: Fraction | None = None
    node_difficulty: Fraction | None = None


def window_summary(pool: ViewedPool, top: int = TOP_SHOWN) -> WindowSummary:
    """Reads only the ``top`` miners' records (the window may hold 100,000)."""
    acc = pool.accountant
    w = acc.weights()
    ids = w.miner_ids.tolist()
    best = heapq.nlargest(top, zip(w.weights, ids, strict=True))
    records = repo.get_miners(pool.engine, [i for _x, i in best])
    return WindowSummary(acc.share_count, acc.total_weight, len(ids),
                         tuple((records[i].account, x) for x, i in best),
                         acc.network_difficulty, pool.window.node_difficulty)


def published_window_summary(view: WindowView, top: int = TOP_SHOWN) -> WindowSummary:
    """:func:`window_summary` of the view a cluster's leader published (a member holds no
    accountant). ``view.miners`` is in miner-id order, so ranking equal weights by position
    ranks them by id, as :func:`window_summary` does: the same ``top`` on every member."""
    weights = [x for _a, x in view.miners]
    best = heapq.nlargest(top, zip(weights, range(len(weights)), strict=True))
    return WindowSummary(view.share_count, view.total_weight, len(weights),
                         tuple((view.miners[i][0], x) for x, i in best),
                         view.window_difficulty, view.node_difficulty)


@dataclass(frozen=True, slots=True)
class DistributionSummary:
    """The newest distribution at template revenue ``revenue`` (None: unknown, no amounts):
    payees (account, weight, amount; 0 where pruned as dust), the pool's amount, and the bytes
    and sigops its outputs add to the coinbase against the ``[distribution]`` budget."""

    distribution_id: int
    total_weight: int
    payee_count: int
    dropped: int
    revenue: int | None
    pool_amount: int | None
    payees: tuple[tuple[str, int, int | None], ...]
    outputs_bytes: int
    outputs_sigops: int
    budget_bytes: int
    budget_sigops: int


def distribution_summary(pool: ViewedPool, fitted: FittedDistribution, revenue: int | None,
                         top: int = TOP_SHOWN) -> DistributionSummary:
    dist = fitted.distribution
    cols = dist.columns()
    weights = cols.weights.tolist()
    amounts: list[int] | None = None
    pool_amount = None
    if revenue is not None and revenue > 0:
        result = compute_outputs(dist, revenue)
        amounts, pool_amount = list(result.payee_amounts), result.pool_amount
    order = heapq.nlargest(top, range(len(weights)), key=weights.__getitem__)
    accounts = fitted.accounts
    scripts = [dist.pool_payout.script, *cols.scripts, *(a.script for a in
                                                         dist.additional_outputs)]
    ds = pool.settings.distribution
    return DistributionSummary(
        dist.distribution_id, dist.total_weight, len(weights), len(fitted.dropped), revenue,
        pool_amount,
        tuple((accounts[i], weights[i], amounts[i] if amounts is not None else None)
              for i in order),
        dist.max_outputs_size(), sum(sigop_cost(s) for s in scripts),
        ds.max_outputs_bytes, ds.max_sigops)


def pool_hashrate(pool: ViewedPool, since_ms: int, until_ms: int) -> list[tuple[int, int]]:
    """(bucket start ms, pool hashrate H/s) for every bucket in [since, until)."""
    start = since_ms - since_ms % dash.BUCKET_MS
    per = {b: d for b, _n, d in dash.pool_buckets(pool.engine, start)}
    return [(b, per.get(b, 0) * (1 << 32) * 1000 // dash.BUCKET_MS)
            for b in range(start, until_ms, dash.BUCKET_MS)]


__all__ = [
    "CHART_SPAN_MAX_MS",
    "CHART_SPAN_MS",
    "PAYOUTS_SHOWN",
    "TOP_SHOWN",
    "DistributionSummary",
    "MinerDashboard",
    "MinerPayout",
    "WindowStatsSource",
    "WindowSummary",
    "WorkerSeries",
    "distribution_summary",
    "miner_dashboard",
    "miner_window_stats",
    "pool_hashrate",
    "published_window_summary",
    "refresh_window_stats",
    "take_window_stats",
    "window_stats_current",
    "window_summary",
]
