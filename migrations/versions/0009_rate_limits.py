"""Rate limits shared across processes: one GCRA cell per (scope, client key).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Hand-written to match payouts/store/rate_limits.py exactly (issue 15: rate limits hold across
frontends on PostgreSQL; on SQLite the table stays empty, limits are in memory).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("tat_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_rate_limits"),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
