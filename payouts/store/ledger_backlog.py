"""The ledger backlog: a recorded block's many ledger lines, written out after it (issue #11).

A block of a 100k-miner pool credits up to every miner its share ("dropped": no room in the
coinbase). Writing 100k ledger lines and balance updates in the block's own transaction took
seconds and held the database's writer: share ingest waited (SQLite has one writer) and the
block's recording was O(miners) in one go. So :func:`payouts.store.ledger.record_block_and_round`
stores those lines as one compact row here (int64 arrays), in the block's transaction, and
:func:`payouts.store.ledger.materialize_backlog` writes them out in chunks of a few thousand,
each chunk its own short transaction (lines + balances + progress together, so it is
exactly-once across crashes).

Nothing is ever short meanwhile: a balance is ``miner_balances`` plus what the backlog still
holds for that miner (:func:`pending_deltas`), so the fitting, repayments and the API see every
recorded block at once. An orphaned block's row is cancelled (its unwritten lines never come);
a block that returns un-cancels it. What this module holds is below the ledger's functions: the
row's codec and the pending sums, cached per row and progress so a hot read costs one small
query.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, insert, select, update

from payouts.store.models import LedgerBacklog

I64 = npt.NDArray[np.int64]


def encode(values: list[int] | I64) -> bytes:
    return np.asarray(values, dtype="<i8").tobytes()


def decode(raw: bytes) -> I64:
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)


@dataclass(frozen=True, slots=True)
class PendingRow:
    block_id: int
    reason: str
    done: int
    total: int
    miner_ids: I64
    amounts: I64

    def remaining(self) -> tuple[I64, I64]:
        return self.miner_ids[self.done:], self.amounts[self.done:]


def insert_backlog(conn: Connection, block_id: int, reason: str, miner_ids: list[int],
                   amounts: list[int]) -> None:
    """Store a block's deferred lines (the caller's transaction: the block's own). The blobs
    go through the driver in binary on PostgreSQL (escaping ~1.6 MB as bytea text was a third
    of a 100k-miner block's recording)."""
    ids_blob, amounts_blob = encode(miner_ids), encode(amounts)
    if conn.dialect.name == "postgresql":
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute("INSERT INTO ledger_backlog (block_id, reason, total, done, cancelled, "
                        "miner_ids, amounts) VALUES (%s, %s, %s, 0, false, %b, %b)",
                        (block_id, reason, len(miner_ids), ids_blob, amounts_blob))
        finally:
            cur.close()
        return
    conn.execute(insert(LedgerBacklog).values(
        block_id=block_id, reason=reason, total=len(miner_ids), done=0, cancelled=False,
        miner_ids=ids_blob, amounts=amounts_blob))


def set_cancelled(conn: Connection, block_id: int, cancelled: bool) -> None:
    """Cancel (the block left the chain) or resume (it returned) a block's unwritten lines."""
    conn.execute(update(LedgerBacklog).where(LedgerBacklog.block_id == block_id)
                 .values(cancelled=cancelled))


Key = tuple[int, int, str]  # block id, total, created_at: one row, whatever reuses the id


class _Cache:
    """Decoded rows (a row's arrays never change), and the per-miner sums of the unwritten
    lines for one state of the whole backlog; one per engine."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrays: dict[Key, tuple[str, I64, I64]] = {}
        self.state: tuple[tuple[Key, int], ...] | None = None
        self.sums: dict[int, int] = {}


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_of(conn: Connection) -> _Cache:
    with _caches_lock:
        c = _caches.get(conn.engine)
        if c is None:
            c = _caches[conn.engine] = _Cache()
        return c


def _state(conn: Connection) -> tuple[tuple[Key, int], ...]:
    rows = conn.execute(
        select(LedgerBacklog.block_id, LedgerBacklog.total, LedgerBacklog.created_at,
               LedgerBacklog.done)
        .where(LedgerBacklog.cancelled.is_(False)).order_by(LedgerBacklog.block_id)).all()
    return tuple(((int(b), int(t), str(c)), int(d)) for b, t, c, d in rows)


def pending_rows(conn: Connection) -> list[PendingRow]:
    """The backlog rows still to be written (not cancelled), oldest block first."""
    cache = _cache_of(conn)
    out = []
    for key, done in _state(conn):
        with cache.lock:
            hit = cache.arrays.get(key)
        if hit is None:
            r = conn.execute(select(LedgerBacklog.reason, LedgerBacklog.miner_ids,
                                    LedgerBacklog.amounts)
                             .where(LedgerBacklog.block_id == key[0])).one()
            hit = (r.reason, decode(bytes(r.miner_ids)), decode(bytes(r.amounts)))
            with cache.lock:
                cache.arrays[key] = hit
        reason, ids, amounts = hit
        out.append(PendingRow(key[0], reason, done, key[1], ids, amounts))
    return out


def pending_deltas(conn: Connection) -> dict[int, int]:
    """``{miner_id: sum of its unwritten backlog lines}`` (miners with none are absent);
    recomputed only when the backlog's state changed."""
    cache = _cache_of(conn)
    state = _state(conn)
    with cache.lock:
        if state == cache.state:
            return cache.sums
    parts = [row.remaining() for row in pending_rows(conn)]
    sums: dict[int, int] = {}
    if parts:
        ids = np.concatenate([p[0] for p in parts])
        amounts = np.concatenate([p[1] for p in parts])
        # Per miner: each amount <= MAX_MONEY and at most a few blocks pending, so int64 holds
        # the sums exactly.
        unique, inverse = np.unique(ids, return_inverse=True)
        total = np.zeros(len(unique), dtype=np.int64)
        np.add.at(total, inverse, amounts)
        sums = dict(zip(unique.tolist(), total.tolist(), strict=True))
    with cache.lock:
        cache.state, cache.sums = state, sums
        live = {k for k, _ in state}
        for k in [k for k in cache.arrays if k not in live]:
            del cache.arrays[k]
    return sums


__all__ = [
    "PendingRow",
    "decode",
    "encode",
    "insert_backlog",
    "pending_deltas",
    "pending_rows",
    "set_cancelled",
]
