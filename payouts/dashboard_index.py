"""The dashboards' read index, kept up to date in the background (docs/dashboards.md).

The miner page must render in ≤ 100 ms with 100,000 miners and 10,000,000 shares stored
(issue #16). Two of its figures would otherwise cost a scan each request: hashrate over time
per worker (the ``shares`` table has no index but its key, on purpose: ingest speed) and the
blocks that paid a miner (each block's distribution, up to 100,000 payees, parsed and settled).
So both are derived once, here, into small indexed tables (:mod:`payouts.store.dashboard`):

- :func:`fold_new_shares`: every share is counted once into its (miner, worker, 10-minute
  bucket) row, in id order behind a cursor that moves in the same transaction, so a crash never
  counts a share twice or loses one;
- :func:`index_blocks`: every block with a distribution gets one row per payee with its
  coinbase-mode amount, or, once known, the amount and the place where it landed
  (:func:`~payouts.settlement.payout_view.landings`). A block is re-indexed when what decides
  its landings changes (:func:`landing_key`: the funding outpoint, a musig2 spend sent).

Neither is the system of record: deleting the tables' rows and the cursor rebuilds them. A
block not indexed yet is read the slow way (:func:`payouts.views.miner_dashboard`), so the
page is never wrong, only slower for the seconds the index lags.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from payouts import dashboards
from payouts.settlement.lifecycle_store import SettlementRow, load_settlements, load_txs
from payouts.settlement.payout_view import coinbase_amounts, landings
from payouts.states import TxStatus
from payouts.store import dashboard as store
from payouts.store import repositories as repo
from payouts.store.dashboard_models import BUCKET_MS
from payouts.store.ledger import BlockRecord, list_blocks
from payouts.views import ViewedPool

log = logging.getLogger("payouts.dashboard")

HASHRATE_KEEP_MS = 7 * 86_400_000  # buckets older than a week are pruned
PRUNE_EVERY_SEC = 3_600.0
SpendFacts = list[tuple[str, int, bytes, str]]


def fold_new_shares(pool: ViewedPool, budget_sec: float = 0.5) -> int:
    """Fold stored shares into the hashrate buckets, chunk after chunk, for about
    ``budget_sec``; how many were folded."""
    done, t0 = 0, time.perf_counter()
    while True:
        n = store.fold_shares(pool.engine)
        done += n
        if n < store.FOLD_CHUNK or time.perf_counter() - t0 > budget_sec:
            return done


def landing_key(settlement: SettlementRow | None, spends: SpendFacts) -> str:
    """What decides where a block's payees land, hashed: its settlement's mode and funding
    outpoint (coinbase: the coinbase txid; ctv: the tree's binding) and the musig2 spends
    sent. Equal keys, equal landings."""
    if settlement is None:
        text = "untracked"
    else:
        sent = sorted((role, seq, txid.hex()) for role, seq, txid, status in spends
                      if status != TxStatus.PLANNED)
        funding = settlement.funding_txid.hex() if settlement.funding_txid else ""
        text = f"{settlement.mode}:{funding}:{settlement.funding_vout}:{sent}"
    return hashlib.sha256(text.encode()).hexdigest()


def block_payees(pool: ViewedPool, block: BlockRecord,
                 settlement: SettlementRow | None) -> list[store.PayeeRow]:
    """The payee rows of ``block`` (one per registered payee of its distribution)."""
    assert block.distribution_id is not None
    fitted = pool.distribution(block.distribution_id)
    accounts = fitted.accounts
    ids = repo.miner_ids(pool.engine, [a for a in accounts if a])
    txs = load_txs(pool.engine, block.id) if settlement is not None else []
    landed = landings(block, fitted, settlement, txs)
    seq_of = {r.txid: (str(r.role), r.seq) for r in txs}
    amounts = coinbase_amounts(fitted, block.revenue)
    rows = []
    for account in accounts:
        miner_id = ids.get(account)
        if miner_id is None:
            continue
        hit = landed.get(account)
        if hit is None:
            rows.append(store.PayeeRow(miner_id, block.id, amounts[account], None, None, None,
                                       None))
        else:
            role, seq = seq_of.get(hit.txid, (None, None))
            rows.append(store.PayeeRow(miner_id, block.id, hit.amount, hit.txid, hit.vout, role,
                                       seq))
    return rows


def index_blocks(pool: ViewedPool, budget_sec: float = 0.5) -> int:
    """(Re-)index the blocks whose landing key moved, oldest first, for about
    ``budget_sec``; how many were written."""
    t0 = time.perf_counter()
    done_keys = store.indexed_blocks(pool.engine)
    settlements = load_settlements(pool.engine)
    spends = store.landing_facts(pool.engine)
    n = 0
    for block in list_blocks(pool.engine):
        if block.distribution_id is None:
            continue
        s = settlements.get(block.id)
        key = landing_key(s, spends.get(block.id, []))
        if done_keys.get(block.id) == key:
            continue
        store.write_block_payees(pool.engine, block.id, key, block_payees(pool, block, s))
        n += 1
        if time.perf_counter() - t0 > budget_sec:
            break
    return n


def catch_up(pool: ViewedPool) -> None:
    """Run every step until nothing is left (tests, benchmarks, a one-off rebuild)."""
    while fold_new_shares(pool, budget_sec=60.0) or index_blocks(pool, budget_sec=60.0):
        pass
    dashboards.refresh_window_stats(pool)


FOLD_BUDGET_SEC = 0.5


async def run(pool: ViewedPool, *, interval: float = 2.0,
              clock: Callable[[], float] = time.time) -> None:
    """Keep the index up to date: each step in a worker thread; prune old buckets hourly.

    Caught up, it rests ``interval``: a fold holds the store's writer (SQLite has one, which
    share ingest needs), and folding the shares of the last seconds into 10-minute buckets
    more often than that shows nothing new (under full ingest, resting only as long as a step
    took held the writer half the time and cost share ingest a quarter of its throughput).
    Behind (a fold used its whole budget, or a block was indexed) it rests only as long as
    the step took, so a backlog is worked off at half the writer's time."""
    pruned_at = 0.0
    while True:
        t = time.perf_counter()
        try:
            await asyncio.to_thread(fold_new_shares, pool, FOLD_BUDGET_SEC)
            behind = time.perf_counter() - t >= FOLD_BUDGET_SEC
            behind = await asyncio.to_thread(index_blocks, pool) > 0 or behind
            await asyncio.to_thread(dashboards.refresh_window_stats, pool)
            if clock() - pruned_at > PRUNE_EVERY_SEC:
                cutoff = int(clock() * 1000) - HASHRATE_KEEP_MS
                await asyncio.to_thread(store.prune_buckets, pool.engine,
                                        cutoff - cutoff % BUCKET_MS)
                pruned_at = clock()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("updating the dashboards' index failed; retrying")
            behind = False
        await asyncio.sleep(max(time.perf_counter() - t, 0.05) if behind else interval)


__all__ = ["block_payees", "catch_up", "fold_new_shares", "index_blocks", "landing_key", "run"]
