"""Settlement lifecycle tables: settlements, settlement_txs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Hand-written to match payouts/store/settlement_models.py exactly (naming convention of the models).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "settlements",
        sa.Column("block_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("funding_script", sa.LargeBinary(), nullable=True),
        sa.Column("funding_value", sa.BigInteger(), nullable=True),
        sa.Column("funding_txid", sa.LargeBinary(32), nullable=True),
        sa.Column("funding_vout", sa.Integer(), nullable=True),
        sa.Column("paid_height", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("block_id", name="pk_settlements"),
        sa.ForeignKeyConstraint(["block_id"], ["blocks.id"], name="fk_settlements_block_id_blocks"),
        sa.CheckConstraint(
            "mode IN ('coinbase', 'ctv', 'musig2')", name=op.f("ck_settlements_mode_valid")
        ),
        sa.CheckConstraint(
            "phase IN ('waiting', 'broadcasting', 'paid', 'rolled-back')",
            name=op.f("ck_settlements_phase_valid"),
        ),
    )
    op.create_table(
        "settlement_txs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("block_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("parent_seq", sa.Integer(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("txid", sa.LargeBinary(32), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("confirmed_height", sa.BigInteger(), nullable=True),
        sa.Column("confirmed_block", sa.LargeBinary(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("id", name="pk_settlement_txs"),
        sa.ForeignKeyConstraint(
            ["block_id"], ["blocks.id"], name="fk_settlement_txs_block_id_blocks"
        ),
        sa.CheckConstraint(
            "role IN ('fanout', 'cpfp', 'cooperative', 'fallback')",
            name=op.f("ck_settlement_txs_role_valid"),
        ),
        sa.CheckConstraint(
            "status IN ('planned', 'broadcast', 'confirmed')",
            name=op.f("ck_settlement_txs_status_valid"),
        ),
    )
    op.create_index(
        "ix_settlement_txs_block_id_role_seq",
        "settlement_txs",
        ["block_id", "role", "seq"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_settlement_txs_block_id_role_seq", table_name="settlement_txs")
    op.drop_table("settlement_txs")
    op.drop_table("settlements")
