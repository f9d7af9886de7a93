"""SQLAlchemy 2 models of the store: miners, shares, blocks, distributions, the owed ledger.

The schema is owned by Alembic (``migrations/versions``); ``tests/store`` fails when these models
and the migrations disagree. Money, weights and difficulties are BIGINT (Python ``int``), never
floats (ARCHITECTURE invariant 1). Constraint names come from :data:`NAMING_CONVENTION` so that
the migrations name them identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from payouts.accounting.shares import ACCOUNT_MAX, JOB_ID_MAX, KEY_MAX, WORKER_MAX
from payouts.states import BlockStatus, sql_in

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-assigns ids to a column declared exactly ``INTEGER PRIMARY KEY`` (the rowid
# alias, itself 64-bit); a ``BIGINT PRIMARY KEY`` there would stay NULL. PostgreSQL gets BIGINT.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

# Lengths the store enforces before writing (PostgreSQL would reject longer values mid-batch,
# SQLite would silently keep them); repositories validate against these. A share's field limits
# are the share validator's (payouts.accounting.validate checks them).
SHARE_KEY_MAX = KEY_MAX
REASON_MAX = 64

# Share keys are opaque idempotency tokens: compare them bytewise. On PostgreSQL the database
# default collation (e.g. C.UTF-8, en_US) makes every unique-index probe call strcoll; "C" made
# ingest of random keys into a 500k-row table ~2x faster (206 -> 90 ms per 10k batch).
ShareKeyType = String(SHARE_KEY_MAX).with_variant(
    String(SHARE_KEY_MAX, collation="C"), "postgresql"
)

BLOCK_STATUSES: tuple[BlockStatus, ...] = tuple(BlockStatus)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite keeps no offset, so a naive value read back is UTC by construction (the server default
    ``CURRENT_TIMESTAMP`` is UTC and writes are normalised here).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        value = value.astimezone(UTC)
        # SQLite stores the text form; keep it naive UTC so CURRENT_TIMESTAMP rows sort with ours.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now_column() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, server_default=text("CURRENT_TIMESTAMP"))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {int: BigInteger, bytes: LargeBinary}


class Miner(Base):
    """A registered miner account: where its payouts go."""

    __tablename__ = "miners"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(ACCOUNT_MAX), unique=True)
    payout_script: Mapped[bytes] = mapped_column(LargeBinary)
    # x-only (32) or compressed (33) key for the musig2 settlement committee; optional for now.
    musig_pubkey: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = _now_column()


class Share(Base):
    """One accepted share. Append-only; ``id`` order is arrival order (used for rebuild).

    Only the primary key and the ``share_key`` unique index exist (the latter is what makes ingest
    idempotent): every extra index or FK costs ingest throughput, and all reads are either a scan
    in id order (rebuild) or by key.
    """

    __tablename__ = "shares"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    share_key: Mapped[str] = mapped_column(ShareKeyType, unique=True)
    # Deliberately not a declared FOREIGN KEY: PostgreSQL checks an FK with one trigger query
    # per inserted row, which measured at ~2/3 of ingest time (≈55k instead of ≈150k shares/s).
    # persist_shares checks every miner_id against ``miners`` inside the inserting transaction,
    # and miners are never deleted, so the reference cannot dangle.
    miner_id: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(WORKER_MAX))
    difficulty: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str] = mapped_column(String(JOB_ID_MAX))
    revenue: Mapped[int] = mapped_column(BigInteger)
    time_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("difficulty >= 1", name="difficulty_positive"),
        CheckConstraint("revenue >= 0", name="revenue_nonnegative"),
    )


class Distribution(Base):
    """A published payout rule (sv2-spec PR #203 ``SetPayoutDistribution``) as JSON text."""

    __tablename__ = "distributions"

    distribution_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = _now_column()
    body: Mapped[str] = mapped_column(Text)


class Block(Base):
    """A block the pool found, through its settlement lifecycle (found → … → paid/orphaned)."""

    __tablename__ = "blocks"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    height: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    distribution_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("distributions.distribution_id"), nullable=True
    )
    revenue: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (
        CheckConstraint(sql_in("status", BlockStatus), name="status_valid"),
        CheckConstraint("revenue >= 0", name="revenue_nonnegative"),
    )


class LedgerEntry(Base):
    """Owed-balance ledger, append-only: positive = owed to the miner, negative = repaid.

    A miner's balance is ``SUM(amount)``; corrections are new entries, never updates.
    """

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    miner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("miners.id"))
    block_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("blocks.id"), nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(REASON_MAX))
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (
        # The ledger is small next to shares, and balances are read per miner.
        Index("ix_ledger_entries_miner_id", "miner_id"),
        Index("ix_ledger_entries_block_id", "block_id"),
    )


class LedgerBacklog(Base):
    """Ledger lines of a recorded block not written out yet (issue #11: a block credits up to
    every miner of the pool, ~100k lines; they are written in small transactions after the
    block's own, so neither the block nor share ingest waits for them).

    ``miner_ids`` / ``amounts`` are little-endian int64 arrays of ``total`` lines with one
    ``reason``; lines ``[0, done)`` are already in ``ledger_entries`` and ``miner_balances``.
    Balances read the rest from here, so a balance is never short of a recorded block. A
    ``cancelled`` row (its block left the chain) credits nothing more; a block that returns
    un-cancels it."""

    __tablename__ = "ledger_backlog"

    block_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("blocks.id"), primary_key=True, autoincrement=False
    )
    reason: Mapped[str] = mapped_column(String(REASON_MAX))
    total: Mapped[int] = mapped_column(BigInteger)
    done: Mapped[int] = mapped_column(BigInteger)
    cancelled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    miner_ids: Mapped[bytes] = mapped_column(LargeBinary)
    amounts: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (CheckConstraint("0 <= done AND done <= total", name="done_in_range"),)


class LedgerState(Base):
    """One row: ``version`` moves in every transaction that changes what any miner is owed
    (a block's lines, a reversal, a return, a manual line), and not when the backlog's lines
    are written out (that changes no balance). Whoever keeps balances in memory reloads them
    when it moved."""

    __tablename__ = "ledger_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)
