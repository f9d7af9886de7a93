"""API tables: api_tokens, registration_challenges, miner_address_changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Hand-written to match payouts/store/api_models.py exactly (naming convention of the models).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("CURRENT_TIMESTAMP")


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("scopes", sa.String(256), nullable=False),
        _created_at(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "registration_challenges",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("address", sa.String(90), nullable=False),
        _created_at(),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("nonce", name="pk_registration_challenges"),
    )
    op.create_index(
        "ix_registration_challenges_account", "registration_challenges", ["account"]
    )
    op.create_table(
        "miner_address_changes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("miner_id", sa.BigInteger(), nullable=False),
        sa.Column("old_script", sa.LargeBinary(), nullable=False),
        sa.Column("new_script", sa.LargeBinary(), nullable=False),
        sa.Column("challenge_nonce", sa.String(64), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_miner_address_changes"),
        sa.ForeignKeyConstraint(
            ["miner_id"], ["miners.id"], name="fk_miner_address_changes_miner_id_miners"
        ),
    )
    op.create_index(
        "ix_miner_address_changes_miner_id", "miner_address_changes", ["miner_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_miner_address_changes_miner_id", table_name="miner_address_changes")
    op.drop_table("miner_address_changes")
    op.drop_index("ix_registration_challenges_account", table_name="registration_challenges")
    op.drop_table("registration_challenges")
    op.drop_table("api_tokens")
