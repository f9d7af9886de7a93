"""Store models owned by the REST API: operator tokens, registration challenges, address history.

They live on the store's :class:`~payouts.store.models.Base` (same metadata, same naming
convention), so ``migrations/versions/0002_api.py`` is compared against them by the store's
migrations==models test. ``migrations/env.py`` imports this module so that Alembic's
``target_metadata`` (autogenerate, comparison) includes these tables.

MuSig2 signing sessions are in :mod:`payouts.store.musig_models` (every process serves them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from payouts.accounting.shares import ACCOUNT_MAX
from payouts.store.models import Base, BigIntPK, UTCDateTime, _now_column

TOKEN_NAME_MAX = 64
SCOPES_MAX = 256
NONCE_MAX = 64
ADDRESS_MAX = 90
PURPOSE_MAX = 16


class ApiToken(Base):
    """An operator bearer token. Only SHA-256 of the secret is stored; the secret is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(TOKEN_NAME_MAX), unique=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    scopes: Mapped[str] = mapped_column(String(SCOPES_MAX))  # space-separated, sorted
    created_at: Mapped[datetime] = _now_column()
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean(), server_default=false())


class RegistrationChallenge(Base):
    """A one-time nonce a miner signs (BIP-322) to register or rotate a payout address."""

    __tablename__ = "registration_challenges"

    nonce: Mapped[str] = mapped_column(String(NONCE_MAX), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(PURPOSE_MAX))  # "register" | "rotate"
    account: Mapped[str] = mapped_column(String(ACCOUNT_MAX))
    address: Mapped[str] = mapped_column(String(ADDRESS_MAX))
    created_at: Mapped[datetime] = _now_column()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used: Mapped[bool] = mapped_column(Boolean(), server_default=false())

    __table_args__ = (Index("ix_registration_challenges_account", "account"),)


class MinerAddressChange(Base):
    """Audit trail of payout-address rotations (the miners row keeps only the current one)."""

    __tablename__ = "miner_address_changes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    miner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("miners.id"))
    old_script: Mapped[bytes] = mapped_column(LargeBinary)
    new_script: Mapped[bytes] = mapped_column(LargeBinary)
    challenge_nonce: Mapped[str] = mapped_column(String(NONCE_MAX))
    created_at: Mapped[datetime] = _now_column()

    __table_args__ = (Index("ix_miner_address_changes_miner_id", "miner_id"),)
