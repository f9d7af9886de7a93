"""Durable accounting state: accounting_events, accounting_snapshots, miner_balances.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Hand-written to match payouts/store/accounting_models.py exactly (naming convention of the
models). miner_balances is filled from the ledger as it stands.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "accounting_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("after_share_id", sa.BigInteger(), nullable=False),
        sa.Column("bits", sa.BigInteger(), nullable=True),
        sa.Column("block_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("id", name="pk_accounting_events"),
        sa.ForeignKeyConstraint(
            ["block_id"], ["blocks.id"], name="fk_accounting_events_block_id_blocks"
        ),
        sa.CheckConstraint(
            "kind IN ('difficulty', 'round')", name=op.f("ck_accounting_events_kind_valid")
        ),
        sa.CheckConstraint(
            "after_share_id >= 0",
            name=op.f("ck_accounting_events_after_share_id_nonnegative"),
        ),
    )
    op.create_table(
        "accounting_snapshots",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("after_share_id", sa.BigInteger(), nullable=False),
        sa.Column("after_event_id", sa.BigInteger(), nullable=False),
        sa.Column("settings_key", sa.String(200), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("id", name="pk_accounting_snapshots"),
    )
    op.create_table(
        "miner_balances",
        sa.Column("miner_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("owed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("miner_id", name="pk_miner_balances"),
        sa.ForeignKeyConstraint(
            ["miner_id"], ["miners.id"], name="fk_miner_balances_miner_id_miners"
        ),
    )
    op.execute(
        "INSERT INTO miner_balances (miner_id, owed) "
        "SELECT miner_id, CAST(SUM(amount) AS BIGINT) FROM ledger_entries GROUP BY miner_id"
    )


def downgrade() -> None:
    op.drop_table("miner_balances")
    op.drop_table("accounting_snapshots")
    op.drop_table("accounting_events")
