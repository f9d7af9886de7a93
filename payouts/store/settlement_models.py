"""Store models owned by the settlement lifecycle (``payouts.settlement.lifecycle``).

What must survive a restart so that a new lifecycle object resumes where the old one stopped
and never pays twice:

- ``settlements``: one row per tracked block: its settlement mode, the coinbase output the
  payout spends (script and value; its outpoint once the block is seen) -- in coinbase mode the
  coinbase txid and the index of its first payout output instead -- and the phase.
- ``settlement_txs``: every transaction the lifecycle built for a block, with its raw bytes
  (re-broadcasting the *same* bytes is always safe), its place in the fan-out tree and whether
  it was broadcast / confirmed (and in which block, so a reorg of the payout alone is noticed).

They live on the store's :class:`~payouts.store.models.Base` (same metadata, same naming
convention); ``migrations/versions/0003_settlements.py`` creates them and ``migrations/env.py``
imports this module so that Alembic's target metadata includes them.

MuSig2 signing sessions are in :mod:`payouts.store.musig_models`; the signed cooperative spend
and the signed fallback are here, as raw transactions.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from payouts.states import MODE_NAMES, SettlementPhase, TxRole, TxStatus, sql_in
from payouts.store.models import Base, BigIntPK, _now_column

SETTLEMENT_MODES = MODE_NAMES
SETTLEMENT_PHASES: tuple[SettlementPhase, ...] = tuple(SettlementPhase)
TX_ROLES: tuple[TxRole, ...] = tuple(TxRole)
TX_STATUSES: tuple[TxStatus, ...] = tuple(TxStatus)


class Settlement(Base):
    """How one recorded block pays out, and how far that got."""

    __tablename__ = "settlements"

    block_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("blocks.id"), primary_key=True, autoincrement=False
    )
    mode: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16))
    # ctv / musig2: the coinbase output the payout spends (the commitment output / the musig2
    # key output): its script and value from tracking on, its outpoint (txid, vout) once the
    # coinbase is known. coinbase mode: script and value stay null; funding_txid is the coinbase
    # txid and funding_vout the index of its first payout output (the API locates each payout
    # from them), both null until the coinbase is known (read from the node once the block is
    # in the active chain when it was recorded without one).
    funding_script: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    funding_value: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    funding_txid: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    funding_vout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    paid_height: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (
        CheckConstraint(sql_in("mode", MODE_NAMES), name="mode_valid"),
        CheckConstraint(sql_in("phase", SettlementPhase), name="phase_valid"),
    )


class SettlementTx(Base):
    """A transaction of a block's settlement: a fan-out tree node, its CPFP child, or a musig2
    spend. ``seq`` is the tree index (fan-out and its CPFP child share it; 0 for spends)."""

    __tablename__ = "settlement_txs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    block_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("blocks.id"))
    role: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(Integer)
    parent_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    level: Mapped[int] = mapped_column(Integer)
    txid: Mapped[bytes] = mapped_column(LargeBinary(32))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    confirmed_height: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    confirmed_block: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (
        CheckConstraint(sql_in("role", TxRole), name="role_valid"),
        CheckConstraint(sql_in("status", TxStatus), name="status_valid"),
        Index("ix_settlement_txs_block_id_role_seq", "block_id", "role", "seq", unique=True),
    )


__all__ = [
    "SETTLEMENT_MODES",
    "SETTLEMENT_PHASES",
    "TX_ROLES",
    "TX_STATUSES",
    "Settlement",
    "SettlementTx",
]
