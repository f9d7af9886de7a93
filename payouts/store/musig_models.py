"""Store models of the MuSig2 signing sessions (:mod:`payouts.settlement.musig2.registry`).

A session lives here, not in one process's memory, so that every process of a pool serves the
same session: a signer may post its nonce to one frontend and its partial signature to another,
and a process that restarts (or a new leader) resumes the session where it stood.

- ``musig_sessions``: one row per session: what it signs (the 32-byte message, the taproot
  tweak), its deadlines (seconds on the servers' clock), the state, the round-1 result
  (aggregate nonce), the final signature, how it failed, and ``version``, bumped by every write
  (a process keeps a session in memory only as long as the version it read is current).
  ``block_id`` is unique: one session per settlement, whoever opens it first.
- ``musig_committee``: the committee keys in signer-index order, and each signer's last
  partial signature found bad (a retry of it is refused without curve work).
- ``musig_nonces``, ``musig_partial_sigs``: the accepted public contributions, one per signer
  and slot (the primary key refuses a second one at the database too).
- ``musig_rejections``: every refused contribution, in arrival order (the blame trail).

Only public values are stored: the secret nonces are the signers' and never reach the pool
(BIP-327 "Signing Flow"). ``migrations/versions/0008_musig_sessions.py`` creates the tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from payouts.settlement.musig2.session import PartialSigCheck, SessionState
from payouts.states import sql_in
from payouts.store.models import Base, BigIntPK, _now_column

SESSION_ID_MAX = 64
CODE_MAX = 32

def _session_fk() -> ForeignKey:
    """A child row goes with its session (a discarded session leaves nothing behind)."""
    return ForeignKey("musig_sessions.id", ondelete="CASCADE")


class MusigSession(Base):
    """One MuSig2 signing session: parameters, deadlines, state and result."""

    __tablename__ = "musig_sessions"

    id: Mapped[str] = mapped_column(String(SESSION_ID_MAX), primary_key=True)
    block_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("blocks.id"), nullable=True, unique=True
    )
    msg: Mapped[bytes] = mapped_column(LargeBinary(32))
    # NULL: the plain aggregate key; b"": BIP-86; 32 bytes: a script-tree root (BIP-341).
    taproot_merkle_root: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    max_signers: Mapped[int] = mapped_column(Integer)
    psig_check: Mapped[str] = mapped_column(String(16))
    nonce_deadline: Mapped[float] = mapped_column(Double)
    sig_deadline: Mapped[float] = mapped_column(Double)
    state: Mapped[str] = mapped_column(String(32))
    aggnonce: Mapped[bytes | None] = mapped_column(LargeBinary(66), nullable=True)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(CODE_MAX), nullable=True)
    failure_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    failure_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    # JSON object signer index -> Blame, fixed when the session failed.
    failure_blame: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (
        CheckConstraint(sql_in("state", SessionState), name="state_valid"),
        CheckConstraint(sql_in("psig_check", PartialSigCheck), name="psig_check_valid"),
    )


class MusigCommittee(Base):
    """A committee key of a session (signer index = position in aggregation order)."""

    __tablename__ = "musig_committee"

    session_id: Mapped[str] = mapped_column(String(SESSION_ID_MAX), _session_fk(), primary_key=True)
    signer_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pubkey: Mapped[bytes] = mapped_column(LargeBinary(33))
    last_bad_psig: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class MusigNonce(Base):
    """A signer's accepted public nonce (66 bytes, BIP-327 round 1)."""

    __tablename__ = "musig_nonces"

    session_id: Mapped[str] = mapped_column(String(SESSION_ID_MAX), _session_fk(), primary_key=True)
    signer_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pubnonce: Mapped[bytes] = mapped_column(LargeBinary(66))


class MusigPartialSig(Base):
    """A signer's held partial signature (32 bytes, BIP-327 round 2); ``unverified_at`` is its
    arrival time while it has passed only the range check (``ON_AGGREGATE``), else NULL."""

    __tablename__ = "musig_partial_sigs"

    session_id: Mapped[str] = mapped_column(String(SESSION_ID_MAX), _session_fk(), primary_key=True)
    signer_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    psig: Mapped[bytes] = mapped_column(LargeBinary(32))
    unverified_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class MusigRejection(Base):
    """A refused contribution (the session's audit trail), in arrival order by ``id``."""

    __tablename__ = "musig_rejections"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(SESSION_ID_MAX), _session_fk())
    signer_index: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(CODE_MAX))
    at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ix_musig_rejections_session_id", "session_id"),)


__all__ = ["MusigCommittee", "MusigNonce", "MusigPartialSig", "MusigRejection", "MusigSession"]
