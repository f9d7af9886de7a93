"""Dashboards' read index: per-worker hashrate buckets, the payee index, and their cursors.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Hand-written to match payouts/store/dashboard_models.py exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_MAX = 128


def upgrade() -> None:
    op.create_table(
        "worker_hashrate",
        sa.Column("miner_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("worker", sa.String(WORKER_MAX), nullable=False),
        sa.Column("shares", sa.BigInteger(), nullable=False),
        sa.Column("difficulty", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("miner_id", "bucket_ms", "worker", name="pk_worker_hashrate"),
    )
    op.create_index("ix_worker_hashrate_bucket_ms", "worker_hashrate", ["bucket_ms"])
    op.create_table(
        "payee_index",
        sa.Column("miner_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("block_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("txid", sa.LargeBinary(), nullable=True),
        sa.Column("vout", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("miner_id", "block_id", name="pk_payee_index"),
    )
    op.create_index("ix_payee_index_block_id", "payee_index", ["block_id"])
    op.create_table(
        "payee_index_blocks",
        sa.Column("block_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("landing_key", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("block_id", name="pk_payee_index_blocks"),
    )
    op.create_table(
        "dashboard_state",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("shares_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dashboard_state"),
        sa.CheckConstraint("id = 1", name=op.f("ck_dashboard_state_one_row")),
    )
    op.execute("INSERT INTO dashboard_state (id, shares_through) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("dashboard_state")
    op.drop_table("payee_index_blocks")
    op.drop_index("ix_payee_index_block_id", table_name="payee_index")
    op.drop_table("payee_index")
    op.drop_index("ix_worker_hashrate_bucket_ms", table_name="worker_hashrate")
    op.drop_table("worker_hashrate")
