"""Initial schema: miners, shares, distributions, blocks, ledger_entries.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Hand-written to match payouts/store/models.py exactly (constraint names follow the models'
naming convention); tests/store/test_migrations.py compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite auto-assigns ids only to ``INTEGER PRIMARY KEY``; PostgreSQL gets BIGINT.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("CURRENT_TIMESTAMP")
# Opaque idempotency keys compare bytewise; see models.ShareKeyType for the measured reason.
_SHARE_KEY = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW)


def upgrade() -> None:
    op.create_table(
        "miners",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("payout_script", sa.LargeBinary(), nullable=False),
        sa.Column("musig_pubkey", sa.LargeBinary(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_miners"),
        sa.UniqueConstraint("account", name="uq_miners_account"),
    )
    op.create_table(
        "shares",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("share_key", _SHARE_KEY, nullable=False),
        sa.Column("miner_id", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("difficulty", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shares"),
        sa.UniqueConstraint("share_key", name="uq_shares_share_key"),
        # No FK on miner_id (ingest speed); persist_shares validates it. See models.Share.
        sa.CheckConstraint("difficulty >= 1", name=op.f("ck_shares_difficulty_positive")),
        sa.CheckConstraint("revenue >= 0", name=op.f("ck_shares_revenue_nonnegative")),
    )
    op.create_table(
        "distributions",
        sa.Column("distribution_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        _created_at(),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("distribution_id", name="pk_distributions"),
    )
    op.create_table(
        "blocks",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("distribution_id", sa.BigInteger(), nullable=True),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_blocks"),
        sa.UniqueConstraint("block_hash", name="uq_blocks_block_hash"),
        sa.ForeignKeyConstraint(
            ["distribution_id"],
            ["distributions.distribution_id"],
            name="fk_blocks_distribution_id_distributions",
        ),
        sa.CheckConstraint(
            "status IN ('found', 'confirmed', 'mature', 'paid', 'orphaned')",
            name=op.f("ck_blocks_status_valid"),
        ),
        sa.CheckConstraint("revenue >= 0", name=op.f("ck_blocks_revenue_nonnegative")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("miner_id", sa.BigInteger(), nullable=False),
        sa.Column("block_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.ForeignKeyConstraint(
            ["miner_id"], ["miners.id"], name="fk_ledger_entries_miner_id_miners"
        ),
        sa.ForeignKeyConstraint(
            ["block_id"], ["blocks.id"], name="fk_ledger_entries_block_id_blocks"
        ),
    )
    op.create_index("ix_ledger_entries_miner_id", "ledger_entries", ["miner_id"])
    op.create_index("ix_ledger_entries_block_id", "ledger_entries", ["block_id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_block_id", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_miner_id", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("blocks")
    op.drop_table("distributions")
    op.drop_table("shares")
    op.drop_table("miners")
