"""Blocks and the append-only owed-balance ledger.

The ledger implements the "nothing owed is ever dropped" half of ARCHITECTURE invariant 2: a
miner's balance is ``SUM(amount)`` of its entries (positive = owed, negative = repaid); entries
are never updated, and a reorg is undone by reversal entries (:func:`orphan_block`). A block and
its ledger lines are written in one transaction, and every line moves ``miner_balances`` by its
amount in that same transaction, so a balance is one row read and a block costs O(its lines)
whatever the history (archiving old lines, docs/retention.md, leaves balances unchanged).
Re-exported by :mod:`payouts.store.repositories`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Connection, Engine, cast, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from payouts.errors import DuplicateKeyError, UnknownMinerError, ValidationError
from payouts.states import BLOCK_STATUS_ORDER, BlockStatus
from payouts.store._common import (
    id_list,
    is_int,
    raw_cursor,
    write_connection,
)
from payouts.store.accounting_state import insert_event
from payouts.store.hot_reads import hot_query
from payouts.store.ledger_backlog import insert_backlog, pending_deltas, pending_rows, set_cancelled
from payouts.store.models import (
    BLOCK_STATUSES,
    REASON_MAX,
    Block,
    Distribution,
    LedgerBacklog,
    LedgerEntry,
    LedgerState,
    Miner,
)
from payouts.tx.hashes import display_hex
from payouts.tx.txout import MAX_MONEY


@dataclass(frozen=True, slots=True)
class BlockRecord:
    id: int
    height: int
    block_hash: bytes
    distribution_id: int | None
    revenue: int
    status: BlockStatus
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerCredit:
    """One ledger line to append: ``amount`` > 0 is owed to the miner, < 0 is a repayment."""

    miner_id: int
    amount: int
    reason: str


@dataclass(frozen=True, slots=True)
class DeferredLines:
    """Positive ledger lines of one ``reason`` a block records through the backlog."""

    reason: str
    miner_ids: list[int]
    amounts: list[int]
    # The caller read these ids from the miners table (the service's candidates: the window's
    # miners, whose shares were checked against it, and the ledger's): no 100k-id re-check.
    known_miners: bool = False

    def __post_init__(self) -> None:
        if len(self.miner_ids) != len(self.amounts):
            raise ValidationError("deferred lines: one amount per miner")
        ints = set(map(type, self.amounts)) <= {int}  # no float, no bool reaches the ledger
        a = np.asarray(self.amounts, dtype=np.int64) if ints else None
        if a is None or (len(a) and not (a.min() > 0 and a.max() <= MAX_MONEY)):
            raise ValidationError("deferred lines are credits: each a positive int within "
                                  "MAX_MONEY")
        if not 1 <= len(self.reason) <= REASON_MAX:
            raise ValidationError(f"reason must be 1..{REASON_MAX} characters")


@dataclass(frozen=True, slots=True)
class LedgerEntryRecord:
    id: int
    miner_id: int
    block_id: int | None
    amount: int
    reason: str
    created_at: datetime


# -- ledger ----------------------------------------------------------------------------------


def _validate_credits(credits: Sequence[LedgerCredit]) -> None:
    for i, c in enumerate(credits):
        if not is_int(c.miner_id):
            raise ValidationError(f"ledger entry #{i}: miner_id must be an int")
        if not is_int(c.amount) or c.amount == 0 or abs(c.amount) > MAX_MONEY:
            raise ValidationError(
                f"ledger entry #{i}: amount must be a non-zero int within ±MAX_MONEY, "
                f"got {c.amount!r}"
            )
        if not isinstance(c.reason, str) or not 1 <= len(c.reason) <= REASON_MAX:
            raise ValidationError(f"ledger entry #{i}: reason must be 1..{REASON_MAX} characters")


def _balances(conn: Connection, ids: Sequence[int] | None) -> dict[int, int]:
    """``{miner_id: owed}``: ``miner_balances`` plus the lines the backlog still holds
    (:mod:`payouts.store.ledger_backlog`), for ``ids`` or every miner with a balance; one bind
    parameter whatever ``len(ids)``."""
    cur = raw_cursor(conn)
    try:
        if ids is None:
            cur.execute("SELECT miner_id, owed FROM miner_balances")
        else:
            sql, param = id_list(conn, ids)
            cur.execute(f"SELECT miner_id, owed FROM miner_balances WHERE miner_id {sql}",
                        (param,))
        out = {int(m): int(o) for m, o in cur.fetchall()}
    finally:
        cur.close()
    pending = pending_deltas(conn)
    if pending:
        wanted = pending if ids is None else {i: pending[i] for i in ids if i in pending}
        for m, d in wanted.items():
            out[m] = out.get(m, 0) + d
    return out


def bump_ledger_version(conn: Connection) -> int:
    """Move ``ledger_state.version`` (the caller's transaction changes balances); the new one."""
    conn.execute(update(LedgerState).where(LedgerState.id == 1)
                 .values(version=LedgerState.version + 1))
    return int(conn.execute(select(LedgerState.version).where(LedgerState.id == 1)).scalar_one())


def ledger_version(conn_or_engine: Connection | Engine) -> int:
    """The current ``ledger_state.version``."""
    q = select(LedgerState.version).where(LedgerState.id == 1)
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return int(conn.execute(q).scalar_one())
    return int(conn_or_engine.execute(q).scalar_one())


def _count_known(conn: Connection, ids: Sequence[int]) -> int:
    """How many of the distinct ``ids`` are registered miners (no row comes back: a 100k-miner
    block checks its lines in one small answer)."""
    sql, param = id_list(conn, ids)
    cur = raw_cursor(conn)
    try:
        cur.execute(f"SELECT COUNT(*) FROM miners WHERE id {sql}", (param,))
        return int(cur.fetchone()[0])
    finally:
        cur.close()


def _known_miners(conn: Connection, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` are registered (PostgreSQL: row-locked, so the overdraft check that
    follows is race-free)."""
    sql, param = id_list(conn, ids)
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    cur = raw_cursor(conn)
    try:
        cur.execute(f"SELECT id FROM miners WHERE id {sql}{lock}", (param,))
        return {int(r[0]) for r in cur.fetchall()}
    finally:
        cur.close()


def _insert_lines(conn: Connection, credits: Sequence[LedgerCredit], block_id: int | None,
                  *, returning: bool) -> list[int]:
    """Insert ledger lines and move ``miner_balances`` by the same amounts, in the caller's
    transaction: two statements whatever the number of lines (arrays on PostgreSQL,
    ``executemany`` on SQLite), so a 100k-miner block is not 100k round trips."""
    miner_ids = [c.miner_id for c in credits]
    amounts = [c.amount for c in credits]
    reasons = [c.reason for c in credits]
    deltas: dict[int, int] = {}
    for m, a in zip(miner_ids, amounts, strict=True):
        deltas[m] = deltas.get(m, 0) + a
    cur = raw_cursor(conn)
    try:
        if conn.dialect.name == "postgresql":
            cur.execute(
                "INSERT INTO ledger_entries (miner_id, block_id, amount, reason) "
                "SELECT m, %s, a, r FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) "
                "AS t(m, a, r)" + (" RETURNING id" if returning else ""),
                (block_id, miner_ids, amounts, reasons),
            )
            ids = sorted(int(r[0]) for r in cur.fetchall()) if returning else []
            cur.execute(
                "INSERT INTO miner_balances (miner_id, owed) "
                "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) "
                "ON CONFLICT (miner_id) DO UPDATE SET owed = miner_balances.owed + EXCLUDED.owed",
                (list(deltas), list(deltas.values())),
            )
            return ids
        cur.executemany(
            "INSERT INTO ledger_entries (miner_id, block_id, amount, reason) VALUES (?, ?, ?, ?)",
            zip(miner_ids, [block_id] * len(credits), amounts, reasons, strict=True),
        )
        ids = []
        if returning:
            # Under the write lock the rowids just taken are consecutive, ending at the last.
            last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
            ids = list(range(int(last) - len(credits) + 1, int(last) + 1))
        cur.executemany(
            "INSERT INTO miner_balances (miner_id, owed) VALUES (?, ?) "
            "ON CONFLICT (miner_id) DO UPDATE SET owed = owed + excluded.owed",
            deltas.items(),
        )
        return ids
    finally:
        cur.close()


def insert_ledger_lines(conn: Connection, credits: Sequence[LedgerCredit],
                        block_id: int | None) -> list[int]:
    """Append lines already known valid (re-recording a returning block's own lines) and
    move the balances with them, in the caller's transaction; their ids, ascending."""
    if not credits:
        return []
    return _insert_lines(conn, credits, block_id, returning=True)


def _append(
    conn: Connection,
    credits: Sequence[LedgerCredit],
    block_id: int | None,
    allow_overdraft: bool,
    *,
    returning: bool = True,
) -> list[int]:
    """Validate against the database and insert; the caller owns the transaction."""
    if not credits:
        return []
    ids = sorted({c.miner_id for c in credits})
    known = _known_miners(conn, ids)
    missing = [i for i in ids if i not in known]
    if missing:
        raise UnknownMinerError(f"miner_id {missing[0]} is not a registered miner")
    if not allow_overdraft:
        balance = _balances(conn, ids)
        for c in credits:
            balance[c.miner_id] = balance.get(c.miner_id, 0) + c.amount
        over = sorted(m for m, b in balance.items() if b < 0)
        if over:
            raise ValidationError(
                f"repayment exceeds what is owed to miner {over[0]} "
                f"(balance would be {balance[over[0]]})",
                code="ledger-overdraft",
            )
    return _insert_lines(conn, credits, block_id, returning=returning)


def append_ledger_entries(
    engine: Engine,
    credits: Sequence[LedgerCredit],
    block_id: int | None = None,
    *,
    allow_overdraft: bool = False,
) -> list[int]:
    """Append ledger lines atomically (all or none); return their ids.

    Unknown miner → :class:`UnknownMinerError`; a zero/over-range amount or a bad reason →
    :class:`ValidationError`; a repayment that would make a balance negative →
    ``ledger-overdraft`` unless ``allow_overdraft``.
    """
    _validate_credits(credits)
    with write_connection(engine) as conn, conn.begin():
        if block_id is not None and (
            conn.execute(select(Block.id).where(Block.id == block_id)).first() is None
        ):
            raise ValidationError(f"block {block_id} does not exist", code="unknown-block")
        ids = _append(conn, credits, block_id, allow_overdraft)
        if ids:
            bump_ledger_version(conn)
        return ids


def ledger_balances(engine: Engine, miner_ids: Iterable[int] | None = None) -> dict[int, int]:
    """``{miner_id: owed}``: what the ledger owes each miner (``SUM(amount)`` of its lines, kept
    in ``miner_balances``); miners that never had a line are absent."""
    ids = None if miner_ids is None else sorted(set(miner_ids))
    with engine.connect() as conn:
        return _balances(conn, ids)


def ledger_balance(engine: Engine, miner_id: int) -> int:
    """What the pool's ledger owes one miner (0 when nothing was ever credited)."""
    return ledger_balances(engine, [miner_id]).get(miner_id, 0)


_BALANCE_SQL = (
    "SELECT m.account, m.id, m.payout_script, COALESCE(b.owed, 0), "
    "(SELECT COUNT(*) FROM ledger_backlog k WHERE k.cancelled = {false}) FROM miners m "
    "LEFT JOIN miner_balances b ON b.miner_id = m.id WHERE m.account = {param}"
)


def _balances_of(engine: Engine, rows: list[Any]) -> dict[str, tuple[int, bytes, int]]:
    """``{account: (miner_id, script, owed)}`` from rows of ``account, id, script, owed,
    open backlog rows``: a block's lines still being written out are added from the backlog."""
    if not rows:
        return {}
    deltas: dict[int, int] = {}
    if rows[0][4]:
        with engine.connect() as c:
            deltas = pending_deltas(c)
    return {r[0]: (int(r[1]), bytes(r[2]), int(r[3]) + deltas.get(int(r[1]), 0)) for r in rows}


def miner_balance(engine: Engine, account: str) -> tuple[int, bytes, int] | None:
    """``(miner_id, payout_script, owed)`` for ``account`` in one query (the API's hot read);
    None for an unknown account."""
    pg = engine.dialect.name == "postgresql"
    sql = _BALANCE_SQL.format(param="%s" if pg else "?", false="false" if pg else "0")
    return _balances_of(engine, hot_query(engine, sql, (account,))).get(account)


BALANCES_SQL_PG = _BALANCE_SQL.format(param="ANY(%s)", false="false")


async def miner_balances_async(conn: Any, engine: Engine, accounts: list[str]
                               ) -> dict[str, tuple[int, bytes, int]]:
    """:func:`miner_balances` on PostgreSQL through ``conn``, a psycopg ``AsyncConnection``
    in autocommit mode (the event loop waits on the socket, no thread)."""
    async with conn.cursor() as cur:
        await cur.execute(BALANCES_SQL_PG, (accounts,))
        rows = await cur.fetchall()
    if rows and rows[0][4]:  # a block's lines are being written out: rare, off the loop
        import asyncio

        return await asyncio.to_thread(_balances_of, engine, rows)
    return _balances_of(engine, rows)


def miner_balances(engine: Engine, accounts: list[str]) -> dict[str, tuple[int, bytes, int]]:
    """:func:`miner_balance` of several accounts in one query (PostgreSQL: ``= ANY`` of one
    array parameter, however many); unknown accounts are absent."""
    if engine.dialect.name != "postgresql":
        return {a: b for a in accounts if (b := miner_balance(engine, a)) is not None}
    return _balances_of(engine, hot_query(engine, BALANCES_SQL_PG, (accounts,)))


def export_ledger(engine: Engine, miner_id: int | None = None) -> list[dict[str, Any]]:
    """The whole ledger in id order as JSON-able dicts (audit export); only ``miner_id``'s
    lines when given.

    Keys: ``id, miner_id, account, block_id, block_hash`` (hex or null), ``amount, reason,
    created_at`` (ISO 8601 UTC).
    """
    q = (
        select(
            LedgerEntry.id,
            LedgerEntry.miner_id,
            Miner.account,
            LedgerEntry.block_id,
            Block.block_hash,
            LedgerEntry.amount,
            LedgerEntry.reason,
            LedgerEntry.created_at,
        )
        .join(Miner, Miner.id == LedgerEntry.miner_id)
        .outerjoin(Block, Block.id == LedgerEntry.block_id)
        .order_by(LedgerEntry.id)
    )
    if miner_id is not None:
        q = q.where(LedgerEntry.miner_id == miner_id)
    with engine.connect() as conn:
        return [
            {
                "id": r.id,
                "miner_id": r.miner_id,
                "account": r.account,
                "block_id": r.block_id,
                "block_hash": None if r.block_hash is None else bytes(r.block_hash).hex(),
                "amount": int(r.amount),
                "reason": r.reason,
                "created_at": r.created_at.isoformat(),
            }
            for r in conn.execute(q)
        ]


# -- blocks ----------------------------------------------------------------------------------

# Forward-only lifecycle (BLOCK_STATUS_ORDER); "orphaned" is reached only through orphan_block
# (it must reverse the block's ledger lines in the same transaction).


def record_block(
    engine: Engine,
    *,
    height: int,
    block_hash: bytes,
    revenue: int,
    distribution_id: int | None = None,
    status: BlockStatus = BlockStatus.FOUND,
    credits: Sequence[LedgerCredit] = (),
    allow_overdraft: bool = False,
) -> BlockRecord:
    """Record a found block and its ledger lines in one transaction (all or nothing).

    ``block_hash`` is the 32-byte hash in internal byte order. ``credits`` are the amounts this
    block leaves owed (payees that did not fit) or repays (negative). Raises
    :class:`DuplicateKeyError` for a known hash, ``unknown-distribution`` for a missing
    distribution, and whatever :func:`append_ledger_entries` raises for the credits.
    """
    return record_block_and_round(
        engine, height=height, block_hash=block_hash, revenue=revenue,
        distribution_id=distribution_id, status=status, credits=credits,
        allow_overdraft=allow_overdraft, round_after_share_id=None)[0]


def record_block_and_round(
    engine: Engine,
    *,
    height: int,
    block_hash: bytes,
    revenue: int,
    distribution_id: int | None,
    credits: Sequence[LedgerCredit],
    round_after_share_id: int | None,
    status: str = "found",
    allow_overdraft: bool = False,
    deferred: DeferredLines | None = None,
) -> tuple[BlockRecord, int | None]:
    """:func:`record_block`, plus the accounting ``round`` event placed after share
    ``round_after_share_id`` (None: no event) in the same transaction: a crash can leave
    neither a block whose round the window never closed nor a closed round with no block.
    ``deferred``: positive lines (one reason) stored in the backlog in this transaction and
    written out by :func:`materialize_backlog` (balances count them at once). Returns the block
    and the event's id."""
    if not isinstance(block_hash, bytes) or len(block_hash) != 32:
        raise ValidationError("block_hash must be 32 bytes")
    if not is_int(height) or height < 0:
        raise ValidationError(f"height must be a non-negative int, got {height!r}")
    if not is_int(revenue) or not 0 <= revenue <= MAX_MONEY:
        raise ValidationError(f"revenue must be an int in 0..MAX_MONEY, got {revenue!r}")
    if status not in BLOCK_STATUS_ORDER:
        raise ValidationError(
            f"a new block's status must be one of {[str(s) for s in BLOCK_STATUS_ORDER]}")
    _validate_credits(credits)
    if deferred is not None and deferred.miner_ids and not deferred.known_miners:
        # Checked before the write transaction: miners are never deleted, so what is
        # registered now still is at commit, and the writer's lock is not held for 100k ids.
        wanted = sorted(set(deferred.miner_ids))
        with engine.connect() as conn:
            if _count_known(conn, wanted) != len(wanted):  # rare: name the first unknown
                unknown = set(wanted) - _known_miners(conn, wanted)
                raise UnknownMinerError(f"miner_id {min(unknown)} is not a registered miner")
    with write_connection(engine) as conn, conn.begin():
        if conn.execute(select(Block.id).where(Block.block_hash == block_hash)).first():
            raise DuplicateKeyError(f"block {display_hex(block_hash)} is already recorded")
        if distribution_id is not None and (
            conn.execute(
                select(Distribution.distribution_id).where(
                    Distribution.distribution_id == distribution_id
                )
            ).first()
            is None
        ):
            raise ValidationError(
                f"distribution {distribution_id} does not exist", code="unknown-distribution"
            )
        try:
            row = conn.execute(
                insert(Block)
                .values(
                    height=height,
                    block_hash=block_hash,
                    revenue=revenue,
                    distribution_id=distribution_id,
                    status=status,
                )
                .returning(*Block.__table__.c)
            ).one()
        except IntegrityError:
            raise DuplicateKeyError(
                f"block {display_hex(block_hash)} is already recorded") from None
        _append(conn, credits, row.id, allow_overdraft, returning=False)
        if deferred is not None and deferred.miner_ids:
            insert_backlog(conn, row.id, deferred.reason, deferred.miner_ids, deferred.amounts)
        if credits or (deferred is not None and deferred.miner_ids):
            bump_ledger_version(conn)
        event_id = None
        if round_after_share_id is not None:
            event_id = insert_event(conn, "round", round_after_share_id, block_id=row.id)
    return _block_record(row), event_id


def _block_record(r: Any) -> BlockRecord:
    return BlockRecord(r.id, r.height, r.block_hash, r.distribution_id, r.revenue,
                       BlockStatus(r.status), r.created_at)


def _block_rows(conn: Connection, where: Any) -> list[BlockRecord]:
    rows = conn.execute(select(*Block.__table__.c).where(where).order_by(Block.id)).all()
    return [_block_record(r) for r in rows]


def get_block(engine: Engine, block_id: int) -> BlockRecord | None:
    with engine.connect() as conn:
        found = _block_rows(conn, Block.id == block_id)
    return found[0] if found else None


def get_blocks(engine: Engine, ids: Sequence[int]) -> dict[int, BlockRecord]:
    """The blocks ``ids`` that exist, by id."""
    with engine.connect() as conn:
        return {b.id: b for b in _block_rows(conn, Block.id.in_(list(ids)))}


def get_block_by_hash(engine: Engine, block_hash: bytes) -> BlockRecord | None:
    with engine.connect() as conn:
        found = _block_rows(conn, Block.block_hash == block_hash)
    return found[0] if found else None


def list_blocks(engine: Engine, status: str | None = None) -> list[BlockRecord]:
    """Blocks in id order, optionally only those with ``status`` (``invalid-input`` for a name
    that is no :class:`~payouts.states.BlockStatus`)."""
    if status is not None and status not in BLOCK_STATUSES:
        raise ValidationError(f"status must be one of {[str(s) for s in BLOCK_STATUSES]}")
    with engine.connect() as conn:
        return _block_rows(conn, Block.status == status if status else Block.id.isnot(None))


def locked_block_status(conn: Connection, block_id: int) -> BlockStatus:
    """The status of block ``block_id`` inside the caller's write transaction, its row locked
    on PostgreSQL (SQLite's write lock is taken at BEGIN), so a status change decided from it
    cannot race another; ``unknown-block`` if there is no such block."""
    q = select(Block.status).where(Block.id == block_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    current = conn.execute(q).scalar()
    if current is None:
        raise ValidationError(f"block {block_id} does not exist", code="unknown-block")
    return BlockStatus(current)


def set_block_status(engine: Engine, block_id: int, status: BlockStatus) -> BlockRecord:
    """Advance a block along found → confirmed → mature → paid (never backwards).

    ``"orphaned"`` is delegated to :func:`orphan_block` so the ledger is reversed with it.
    """
    if status == BlockStatus.ORPHANED:
        orphan_block(engine, block_id)
        block = get_block(engine, block_id)
        assert block is not None
        return block
    if status not in BLOCK_STATUS_ORDER:
        raise ValidationError(f"unknown block status {status!r}")
    with write_connection(engine) as conn, conn.begin():
        current = locked_block_status(conn, block_id)
        if (current == BlockStatus.ORPHANED
                or BLOCK_STATUS_ORDER[status] <= BLOCK_STATUS_ORDER[current]):
            raise ValidationError(
                f"block {block_id} cannot go from {current} to {status}",
                code="invalid-block-transition",
            )
        conn.execute(update(Block).where(Block.id == block_id).values(status=status))
        return _block_rows(conn, Block.id == block_id)[0]


#: Reason of the reversal lines :func:`orphan_block` writes for a reorg.
REORG_REASON = "reorg"


def orphan_block(engine: Engine, block_id: int, reason: str = REORG_REASON) -> list[int]:
    """Mark a block orphaned and reverse every ledger line tied to it, atomically.

    After this the block's ledger lines sum to zero per miner, so balances are exactly what they
    were without the block (ARCHITECTURE: "a reorg at any stage rolls back exactly"). A miner
    who was already repaid from the block's credits can go negative (overpaid); later credits
    net it. Returns the ids of the reversal entries.
    """
    if not 1 <= len(reason) <= REASON_MAX:
        raise ValidationError(f"reason must be 1..{REASON_MAX} characters")
    with write_connection(engine) as conn, conn.begin():
        if locked_block_status(conn, block_id) == BlockStatus.ORPHANED:
            raise ValidationError(
                f"block {block_id} is already orphaned", code="invalid-block-transition"
            )
        net = conn.execute(
            select(LedgerEntry.miner_id, cast(func.sum(LedgerEntry.amount), BigInteger))
            .where(LedgerEntry.block_id == block_id)
            .group_by(LedgerEntry.miner_id)
            .order_by(LedgerEntry.miner_id)
        ).all()
        reversals = [LedgerCredit(int(m), -int(s), reason) for m, s in net if int(s) != 0]
        conn.execute(
            update(Block).where(Block.id == block_id).values(status=BlockStatus.ORPHANED))
        set_cancelled(conn, block_id, True)  # its unwritten lines never come
        bump_ledger_version(conn)
        return _append(conn, reversals, block_id, allow_overdraft=True)


BACKLOG_CHUNK = 500
"""Lines per backlog transaction: a few ms of the writer's lock, so share ingest (SQLite has one
writer) waits at most that long; paced by its writer at half the writer's time."""


def materialize_backlog(engine: Engine, max_lines: int = BACKLOG_CHUNK) -> int:
    """Write out up to ``max_lines`` backlog lines of the oldest block still owed them: the
    lines, their balance moves and the new progress in ONE short transaction (exactly once,
    whatever crashes). Returns how many were written (0: nothing left)."""
    if max_lines < 1:
        raise ValueError("max_lines must be >= 1")
    with write_connection(engine) as conn, conn.begin():
        q = (select(LedgerBacklog.block_id, LedgerBacklog.reason, LedgerBacklog.done,
                    LedgerBacklog.total)
             .where(LedgerBacklog.cancelled.is_(False))
             .order_by(LedgerBacklog.block_id).limit(1))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)  # two writers never take the same chunk
        head = conn.execute(q).first()
        if head is None:
            return 0
        rows = {r.block_id: r for r in pending_rows(conn)}
        row = rows[head.block_id]
        a = int(head.done)
        b = min(a + max_lines, int(head.total))
        ids, amounts = row.miner_ids[a:b].tolist(), row.amounts[a:b].tolist()
        _insert_lines(conn, [LedgerCredit(m, x, head.reason) for m, x in zip(
            ids, amounts, strict=True)], head.block_id, returning=False)
        if b == int(head.total):
            conn.execute(delete(LedgerBacklog).where(LedgerBacklog.block_id == head.block_id))
        else:
            conn.execute(update(LedgerBacklog).where(LedgerBacklog.block_id == head.block_id)
                         .values(done=b))
        return b - a


def drain_backlog(engine: Engine) -> int:
    """Write out the whole backlog now (tests, the CLI); how many lines."""
    n = total = 0
    while (n := materialize_backlog(engine, 50_000)):
        total += n
    return total
