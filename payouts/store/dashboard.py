"""Reads and writes of the dashboards' read index (:mod:`payouts.store.dashboard_models`).

Writes are the index's own (:mod:`payouts.dashboard_index` runs them in the background, in
short transactions); reads are single indexed queries sized for the miner page: one miner's
buckets since a time, one miner's newest payee rows, and the status of the settlement txs
those rows name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, insert, select, text, tuple_, update

from payouts.store._common import write_connection
from payouts.store.dashboard_models import (
    BUCKET_MS,
    DashboardState,
    PayeeIndex,
    PayeeIndexBlock,
    WorkerHashrate,
)
from payouts.store.models import Block, Miner
from payouts.store.settlement_models import Settlement, SettlementTx

FOLD_CHUNK = 50_000  # shares read per fold transaction
WRITE_CHUNK = 10_000  # payee rows written per transaction

# The chunk's last id: the fold covers ids in (after, upto], at most ``limit`` shares.
_FOLD_UPTO = text(
    "SELECT MAX(id), COUNT(*) FROM "
    "(SELECT id FROM shares WHERE id > :after ORDER BY id LIMIT :limit) c"
)
# The chunk summed by (miner, bucket, worker) inside the database and upserted in one statement:
# no share row crosses into Python (reading them back and summing in a Python loop cost about
# as much CPU as storing them, issue #17). The same statement on SQLite (>= 3.24: its upsert
# needs the SELECT's WHERE, which it has) and PostgreSQL; ``excluded`` is the row proposed.
_FOLD_UPSERT = text(
    "INSERT INTO worker_hashrate (miner_id, bucket_ms, worker, shares, difficulty) "
    f"SELECT miner_id, time_ms - time_ms % {BUCKET_MS}, worker, COUNT(*), SUM(difficulty) "
    "FROM shares WHERE id > :after AND id <= :upto GROUP BY 1, 2, 3 "
    "ON CONFLICT (miner_id, bucket_ms, worker) DO UPDATE SET "
    "shares = worker_hashrate.shares + excluded.shares, "
    "difficulty = worker_hashrate.difficulty + excluded.difficulty"
)


# -- worker hashrate ------------------------------------------------------------------------


def shares_folded_through(engine: Engine) -> int:
    """The newest share id counted into ``worker_hashrate``."""
    with engine.connect() as conn:
        return int(conn.execute(select(DashboardState.shares_through)).scalar_one())


def fold_shares(engine: Engine, chunk: int = FOLD_CHUNK) -> int:
    """Count the next ``chunk`` stored shares (id order, after the cursor) into their
    (miner, worker, bucket) rows and move the cursor, in one transaction; the number folded.

    Share ids ascend in commit order (one writer: :class:`~payouts.window_keeper.WindowKeeper`),
    so a share stored after the cursor moved past its id cannot exist."""
    with write_connection(engine) as conn, conn.begin():
        after = int(conn.execute(select(DashboardState.shares_through)).scalar_one())
        upto, n = conn.execute(_FOLD_UPTO, {"after": after, "limit": chunk}).one()
        if upto is None:
            return 0
        conn.execute(_FOLD_UPSERT, {"after": after, "upto": int(upto)})
        conn.execute(update(DashboardState).where(DashboardState.id == 1)
                     .values(shares_through=int(upto)))
    return int(n)


def prune_buckets(engine: Engine, before_ms: int) -> int:
    """Delete the buckets that start before ``before_ms``; how many."""
    with write_connection(engine) as conn, conn.begin():
        return conn.execute(
            delete(WorkerHashrate).where(WorkerHashrate.bucket_ms < before_ms)).rowcount


@dataclass(frozen=True, slots=True)
class Bucket:
    worker: str
    bucket_ms: int
    shares: int
    difficulty: int


def miner_buckets(engine: Engine, miner_id: int, since_ms: int,
                  until_ms: int = 2**62) -> list[Bucket]:
    """``miner_id``'s buckets starting in [``since_ms``, ``until_ms``), oldest first (primary
    key range: at most workers × buckets rows)."""
    q = (select(WorkerHashrate.worker, WorkerHashrate.bucket_ms, WorkerHashrate.shares,
                WorkerHashrate.difficulty)
         .where(WorkerHashrate.miner_id == miner_id, WorkerHashrate.bucket_ms >= since_ms,
                WorkerHashrate.bucket_ms < until_ms)
         .order_by(WorkerHashrate.bucket_ms, WorkerHashrate.worker))
    with engine.connect() as conn:
        return [Bucket(*r) for r in conn.execute(q).all()]


def pool_buckets(engine: Engine, since_ms: int) -> list[tuple[int, int, int]]:
    """(bucket_ms, shares, difficulty) of the whole pool since ``since_ms`` (operator page)."""
    q = (select(WorkerHashrate.bucket_ms, func.sum(WorkerHashrate.shares),
                func.sum(WorkerHashrate.difficulty))
         .where(WorkerHashrate.bucket_ms >= since_ms)
         .group_by(WorkerHashrate.bucket_ms).order_by(WorkerHashrate.bucket_ms))
    with engine.connect() as conn:
        return [(int(b), int(n), int(d)) for b, n, d in conn.execute(q).all()]


# -- payee index ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayeeRow:
    """What block ``block_id`` pays ``miner_id`` (``amount``) and, once known, where:
    output ``vout`` of ``txid``, which is settlement tx (``role``, ``seq``) of the block, or
    its coinbase when ``role`` is None."""

    miner_id: int
    block_id: int
    amount: int
    txid: bytes | None
    vout: int | None
    role: str | None
    seq: int | None


def indexed_blocks(engine: Engine) -> dict[int, str]:
    """block id → the landing key its payee rows were computed from."""
    with engine.connect() as conn:
        return {int(b): k for b, k in conn.execute(
            select(PayeeIndexBlock.block_id, PayeeIndexBlock.landing_key)).all()}


def write_block_payees(engine: Engine, block_id: int, landing_key: str,
                       rows: Sequence[PayeeRow], chunk: int = WRITE_CHUNK) -> None:
    """Replace block ``block_id``'s payee rows by ``rows``, ``chunk`` rows a transaction; the
    key is written last, so a crash in between re-indexes the block at the next run (rows of
    one block may then be half old, half new until then: each is right for its own key)."""
    with write_connection(engine) as conn, conn.begin():
        conn.execute(delete(PayeeIndexBlock).where(PayeeIndexBlock.block_id == block_id))
        conn.execute(delete(PayeeIndex).where(PayeeIndex.block_id == block_id))
    for i in range(0, len(rows), chunk):
        with write_connection(engine) as conn, conn.begin():
            conn.execute(insert(PayeeIndex), [
                {"miner_id": r.miner_id, "block_id": r.block_id, "amount": r.amount,
                 "txid": r.txid, "vout": r.vout, "role": r.role, "seq": r.seq}
                for r in rows[i:i + chunk]
            ])
    with write_connection(engine) as conn, conn.begin():
        conn.execute(insert(PayeeIndexBlock),
                     [{"block_id": block_id, "landing_key": landing_key}])


def miner_payees(engine: Engine, miner_id: int, limit: int) -> list[PayeeRow]:
    """``miner_id``'s newest ``limit`` payee rows, newest block first (primary key range)."""
    q = (select(PayeeIndex.miner_id, PayeeIndex.block_id, PayeeIndex.amount, PayeeIndex.txid,
                PayeeIndex.vout, PayeeIndex.role, PayeeIndex.seq)
         .where(PayeeIndex.miner_id == miner_id)
         .order_by(PayeeIndex.block_id.desc()).limit(limit))
    with engine.connect() as conn:
        return [PayeeRow(*r) for r in conn.execute(q).all()]


def tx_rows(engine: Engine, keys: Iterable[tuple[int, str, int]]) -> dict[
        tuple[int, str, int], tuple[str, int]]:
    """(block id, role, seq) → (status, level) of those settlement txs that exist (the unique
    index on the three columns answers each)."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    q = (select(SettlementTx.block_id, SettlementTx.role, SettlementTx.seq, SettlementTx.status,
                SettlementTx.level)
         .where(tuple_(SettlementTx.block_id, SettlementTx.role, SettlementTx.seq).in_(wanted)))
    with engine.connect() as conn:
        return {(int(b), str(r), int(s)): (str(st), int(lv))
                for b, r, s, st, lv in conn.execute(q).all()}


def settlement_modes(engine: Engine, block_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """block id → (mode, phase) of the tracked ones among ``block_ids``."""
    q = (select(Settlement.block_id, Settlement.mode, Settlement.phase)
         .where(Settlement.block_id.in_(list(block_ids))))
    with engine.connect() as conn:
        return {int(b): (str(m), str(p)) for b, m, p in conn.execute(q).all()}


def unindexed_block_ids(engine: Engine) -> list[int]:
    """Blocks with a distribution that the payee index does not hold (yet), id order."""
    q = (select(Block.id).where(Block.distribution_id.isnot(None),
                                Block.id.not_in(select(PayeeIndexBlock.block_id)))
         .order_by(Block.id))
    with engine.connect() as conn:
        return [int(b) for b in conn.execute(q).scalars()]


def landing_facts(engine: Engine) -> dict[int, list[tuple[str, int, bytes, str]]]:
    """block id → (role, seq, txid, status) of its musig2 spends (cooperative, fallback): once
    one is sent, the block's payees land in it. Light: no raw transactions. (Where CTV payees
    land moves only with the settlement's funding outpoint.)"""
    q = (select(SettlementTx.block_id, SettlementTx.role, SettlementTx.seq, SettlementTx.txid,
                SettlementTx.status)
         .where(SettlementTx.role.in_(("cooperative", "fallback")))
         .order_by(SettlementTx.block_id, SettlementTx.role, SettlementTx.seq))
    out: dict[int, list[tuple[str, int, bytes, str]]] = defaultdict(list)
    with engine.connect() as conn:
        for b, role, seq, txid, status in conn.execute(q).all():
            out[int(b)].append((str(role), int(seq), bytes(txid), str(status)))
    return out


def accounts_paid_at(engine: Engine, script: bytes, limit: int = 50) -> list[str]:
    """The accounts whose payout script is ``script`` (the search box; a scan of ``miners``,
    which has no index on the script: a search is rare, a registration is not)."""
    q = select(Miner.account).where(Miner.payout_script == script).order_by(Miner.id).limit(limit)
    with engine.connect() as conn:
        return [str(a) for a in conn.execute(q).scalars()]


__all__ = [
    "BUCKET_MS",
    "Bucket",
    "PayeeRow",
    "accounts_paid_at",
    "fold_shares",
    "indexed_blocks",
    "landing_facts",
    "miner_buckets",
    "miner_payees",
    "pool_buckets",
    "prune_buckets",
    "settlement_modes",
    "shares_folded_through",
    "tx_rows",
    "unindexed_block_ids",
    "write_block_payees",
]
