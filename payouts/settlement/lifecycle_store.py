"""Persistence of the settlement lifecycle: settlements, their transactions, block return.

Every write that the lifecycle's safety rests on is one database transaction here:
a tx is written (``planned``) *before* it is broadcast, so a crash between the two only means
the same bytes are sent again after the restart; a reorg's "forget" and a returning block's
"re-record" each touch the block, its ledger lines and its settlement rows atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast as type_cast

from sqlalchemy import BigInteger, Engine, cast, delete, func, insert, select, update

from payouts.errors import DuplicateKeyError, ValidationError
from payouts.states import MODE_NAMES, BlockStatus, ModeName, SettlementPhase, TxRole, TxStatus
from payouts.store._common import write_connection
from payouts.store.engine import insert_or_skip
from payouts.store.ledger import (
    REORG_REASON,
    LedgerCredit,
    bump_ledger_version,
    insert_ledger_lines,
    locked_block_status,
)
from payouts.store.ledger_backlog import set_cancelled
from payouts.store.models import Block, LedgerEntry
from payouts.store.settlement_models import Settlement, SettlementTx

# Reason of the lines that put a returning block's credits back; with orphan_block's
# REORG_REASON, the block's *original* lines are all the others.
RETURN_REASON = "reorg-return"


@dataclass(frozen=True, slots=True)
class TxRow:
    """One persisted settlement transaction (see :class:`SettlementTx`)."""

    id: int
    block_id: int
    role: TxRole
    seq: int
    parent_seq: int | None
    level: int
    txid: bytes
    raw: bytes
    status: TxStatus
    confirmed_height: int | None
    confirmed_block: bytes | None


@dataclass(frozen=True, slots=True)
class SettlementRow:
    """One block's settlement (see :class:`Settlement`)."""

    block_id: int
    mode: ModeName
    phase: SettlementPhase
    funding_script: bytes | None
    funding_value: int | None
    funding_txid: bytes | None
    funding_vout: int | None
    paid_height: int | None


@dataclass(frozen=True, slots=True)
class NewTx:
    """A tx to persist: ``seq`` its tree index, ``parent_seq`` the tree tx it spends."""

    role: TxRole
    seq: int
    parent_seq: int | None
    level: int
    txid: bytes
    raw: bytes


def create_settlement(
    engine: Engine,
    block_id: int,
    mode: ModeName,
    *,
    funding_script: bytes | None = None,
    funding_value: int | None = None,
    txs: Sequence[NewTx] = (),
) -> bool:
    """Insert a block's settlement and its planned txs; False if it already exists with the
    same mode (idempotent re-tracking), :class:`DuplicateKeyError` if with another mode."""
    if mode not in MODE_NAMES:
        raise ValidationError(f"unknown settlement mode {mode!r}", code="invalid-settlement-mode")
    with write_connection(engine) as conn, conn.begin():
        if conn.execute(select(Block.id).where(Block.id == block_id)).first() is None:
            raise ValidationError(f"block {block_id} does not exist", code="unknown-block")
        existing = conn.execute(
            select(Settlement.mode).where(Settlement.block_id == block_id)
        ).scalar()
        if existing is not None:
            if existing != mode:
                raise DuplicateKeyError(
                    f"block {block_id} is already settled in {existing} mode, not {mode}"
                )
            return False
        conn.execute(
            insert(Settlement).values(
                block_id=block_id,
                mode=mode,
                phase=SettlementPhase.WAITING,
                funding_script=funding_script,
                funding_value=funding_value,
            )
        )
        if txs:
            conn.execute(
                insert(SettlementTx),
                [
                    {
                        "block_id": block_id,
                        "role": t.role,
                        "seq": t.seq,
                        "parent_seq": t.parent_seq,
                        "level": t.level,
                        "txid": t.txid,
                        "raw": t.raw,
                        "status": TxStatus.PLANNED,
                    }
                    for t in txs
                ],
            )
    return True


def load_settlements(engine: Engine) -> dict[int, SettlementRow]:
    with engine.connect() as conn:
        rows = conn.execute(select(*Settlement.__table__.c)).all()
    return {
        r.block_id: SettlementRow(
            r.block_id,
            type_cast(ModeName, r.mode),  # the CHECK constraint holds it to MODE_NAMES
            SettlementPhase(r.phase),
            r.funding_script,
            r.funding_value,
            r.funding_txid,
            r.funding_vout,
            r.paid_height,
        )
        for r in rows
    }


def load_txs(engine: Engine, block_id: int | None = None) -> list[TxRow]:
    """Settlement txs in (block, role, seq) order; all blocks when ``block_id`` is None."""
    q = select(*SettlementTx.__table__.c).order_by(
        SettlementTx.block_id, SettlementTx.role, SettlementTx.seq
    )
    if block_id is not None:
        q = q.where(SettlementTx.block_id == block_id)
    with engine.connect() as conn:
        return [
            TxRow(
                r.id,
                r.block_id,
                TxRole(r.role),
                r.seq,
                r.parent_seq,
                r.level,
                r.txid,
                r.raw,
                TxStatus(r.status),
                r.confirmed_height,
                r.confirmed_block,
            )
            for r in conn.execute(q)
        ]


def add_tx(engine: Engine, block_id: int, tx: NewTx, *, once: bool = False) -> bool:
    """Persist one more tx (a CPFP child, a signed musig2 spend) as ``planned``. ``once``: a
    tx of this block, role and seq already there is kept and this one dropped (two processes
    finishing the same signing session); returns whether this call inserted it."""
    with write_connection(engine) as conn, conn.begin():
        stmt = (insert_or_skip(conn, SettlementTx) if once else insert(SettlementTx)).values(
            block_id=block_id,
            role=tx.role,
            seq=tx.seq,
            parent_seq=tx.parent_seq,
            level=tx.level,
            txid=tx.txid,
            raw=tx.raw,
            status=TxStatus.PLANNED,
        )
        return conn.execute(stmt.returning(SettlementTx.id)).first() is not None


def bind_funding(
    engine: Engine,
    block_id: int,
    txid: bytes,
    vout: int,
    rebound: Sequence[tuple[int, bytes, bytes]],
) -> None:
    """Record the coinbase outpoint the payout spends and the fan-out txs re-bound to it
    (``(row id, txid, raw)``), in one transaction."""
    with write_connection(engine) as conn, conn.begin():
        conn.execute(
            update(Settlement)
            .where(Settlement.block_id == block_id)
            .values(funding_txid=txid, funding_vout=vout)
        )
        for row_id, new_txid, raw in rebound:
            conn.execute(
                update(SettlementTx).where(SettlementTx.id == row_id).values(txid=new_txid, raw=raw)
            )


def delete_tx(engine: Engine, row_id: int) -> None:
    """Drop a CPFP child that can never confirm (its fee coin is gone); a new one replaces it."""
    with write_connection(engine) as conn, conn.begin():
        conn.execute(
            delete(SettlementTx).where(
                SettlementTx.id == row_id, SettlementTx.role == TxRole.CPFP)
        )


def set_tx_status(
    engine: Engine,
    row_id: int,
    status: TxStatus,
    *,
    height: int | None = None,
    block_hash: bytes | None = None,
    was: TxStatus | None = None,
) -> bool:
    """Set a tx's status; with ``was``, only if it is ``was`` now (a conditional update: of
    two processes marking one spend broadcast, one does). Returns whether the row changed."""
    q = update(SettlementTx).where(SettlementTx.id == row_id)
    if was is not None:
        q = q.where(SettlementTx.status == was)
    with write_connection(engine) as conn, conn.begin():
        return conn.execute(
            q.values(status=status, confirmed_height=height, confirmed_block=block_hash)
        ).rowcount > 0


def set_phase(
    engine: Engine, block_id: int, phase: SettlementPhase, *, paid_height: int | None = None
) -> None:
    with write_connection(engine) as conn, conn.begin():
        conn.execute(
            update(Settlement)
            .where(Settlement.block_id == block_id)
            .values(phase=phase, paid_height=paid_height)
        )


def forget_broadcasts(engine: Engine, block_id: int) -> None:
    """After the block left the active chain: every tx that spends its coinbase is invalid.

    CPFP children are deleted (their fee inputs go back to the wallet); the fan-out / musig2
    spends are kept as ``planned`` because they are valid again, byte for byte, if the *same*
    block returns (same coinbase txid)."""
    with write_connection(engine) as conn, conn.begin():
        conn.execute(
            delete(SettlementTx).where(
                SettlementTx.block_id == block_id, SettlementTx.role == TxRole.CPFP
            )
        )
        conn.execute(
            update(SettlementTx)
            .where(SettlementTx.block_id == block_id)
            .values(status=TxStatus.PLANNED, confirmed_height=None, confirmed_block=None)
        )
        conn.execute(
            update(Settlement)
            .where(Settlement.block_id == block_id)
            .values(phase=SettlementPhase.ROLLED_BACK, paid_height=None)
        )


def revive_block(engine: Engine, block_id: int) -> list[int]:
    """A block that was orphaned is back in the active chain: re-record it exactly.

    The block goes back to ``found`` (the lifecycle then re-walks confirmed → mature) and its
    original ledger lines are appended again (reason :data:`RETURN_REASON`), so after
    ``orphan_block`` + this the ledger nets to the block's original lines per miner; a later
    orphan reverses the net again. Append-only: nothing is updated or deleted in the ledger.
    Returns the ids of the new ledger lines.
    """
    with write_connection(engine) as conn, conn.begin():
        # locked: two runners must not both revive (and credit) it
        current = locked_block_status(conn, block_id)
        if current != BlockStatus.ORPHANED:
            raise ValidationError(
                f"block {block_id} is {current}, not orphaned", code="invalid-block-transition"
            )
        original = conn.execute(
            select(LedgerEntry.miner_id, cast(func.sum(LedgerEntry.amount), BigInteger))
            .where(
                LedgerEntry.block_id == block_id,
                LedgerEntry.reason.not_in((REORG_REASON, RETURN_REASON)),
            )
            .group_by(LedgerEntry.miner_id)
            .order_by(LedgerEntry.miner_id)
        ).all()
        conn.execute(update(Block).where(Block.id == block_id).values(status=BlockStatus.FOUND))
        conn.execute(
            update(Settlement)
            .where(Settlement.block_id == block_id)
            .values(phase=SettlementPhase.WAITING, paid_height=None)
        )
        lines = [LedgerCredit(int(m), int(s), RETURN_REASON) for m, s in original if int(s) != 0]
        set_cancelled(conn, block_id, False)  # the lines it had not written out come after all
        bump_ledger_version(conn)
        return insert_ledger_lines(conn, lines, block_id)


__all__ = [
    "REORG_REASON",
    "RETURN_REASON",
    "NewTx",
    "SettlementRow",
    "TxRow",
    "add_tx",
    "bind_funding",
    "create_settlement",
    "delete_tx",
    "forget_broadcasts",
    "load_settlements",
    "load_txs",
    "revive_block",
    "set_phase",
    "set_tx_status",
]
