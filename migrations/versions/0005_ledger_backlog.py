"""Ledger backlog (a recorded block's ledger lines written out after its own transaction) and
ledger_state (a version that moves with every change of a balance).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Hand-written to match payouts/store/models.py (LedgerBacklog) exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "ledger_backlog",
        sa.Column("block_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("miner_ids", sa.LargeBinary(), nullable=False),
        sa.Column("amounts", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.PrimaryKeyConstraint("block_id", name="pk_ledger_backlog"),
        sa.ForeignKeyConstraint(
            ["block_id"], ["blocks.id"], name="fk_ledger_backlog_block_id_blocks"
        ),
        sa.CheckConstraint(
            "0 <= done AND done <= total", name=op.f("ck_ledger_backlog_done_in_range")
        ),
    )


    op.create_table(
        "ledger_state",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_state"),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_state_one_row")),
    )
    op.execute("INSERT INTO ledger_state (id, version) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("ledger_state")
    op.drop_table("ledger_backlog")
