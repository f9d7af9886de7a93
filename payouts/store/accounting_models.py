"""Store models of the durable accounting state (docs/accounting.md, "State that survives a
restart"): the chain events that place the window, the snapshots a restart resumes from, and
the per-miner owed balance kept in step with the ledger.

- ``accounting_events``: what moved the window other than shares, in order, each placed after
  the share with id ``after_share_id``: a network difficulty the node reported (``bits``: the
  next block's nBits, exact) and a block the pool found (``round``: PROP closes its round).
  Replaying the stored shares with these events in between rebuilds the window exactly.
- ``accounting_snapshots``: the window state (scalars and the hot columns of the rows still
  needed) after share ``after_share_id`` and event ``after_event_id``, so a restart reads only
  what came after it. ``checksum`` is the SHA-256 of ``body``; ``version`` its format.
- ``miner_balances``: ``SUM(ledger_entries.amount)`` per miner, updated in the same transaction
  as every ledger line, so a block costs O(miners in the block), never O(ledger history).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from payouts.store.models import Base, BigIntPK, _now_column

EVENT_KINDS = ("difficulty", "round")


class AccountingEvent(Base):
    __tablename__ = "accounting_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    after_share_id: Mapped[int] = mapped_column(BigInteger)
    bits: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("blocks.id"), nullable=True
    )
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (
        CheckConstraint("kind IN ('difficulty', 'round')", name="kind_valid"),
        CheckConstraint("after_share_id >= 0", name="after_share_id_nonnegative"),
    )


class AccountingSnapshot(Base):
    __tablename__ = "accounting_snapshots"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    version: Mapped[int] = mapped_column(Integer)
    after_share_id: Mapped[int] = mapped_column(BigInteger)
    after_event_id: Mapped[int] = mapped_column(BigInteger)
    settings_key: Mapped[str] = mapped_column(String(200))
    checksum: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now_column()


class MinerBalance(Base):
    __tablename__ = "miner_balances"

    miner_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("miners.id"), primary_key=True, autoincrement=False
    )
    owed: Mapped[int] = mapped_column(BigInteger)
