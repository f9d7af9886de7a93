"""Several processes, one elected leader: the lease, the found-block queue, the published
window view and the requests frontends forward to the leader.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Hand-written to match payouts/store/cluster_models.py exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("CURRENT_TIMESTAMP")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=_NOW)


def upgrade() -> None:
    op.create_table(
        "leader_lease",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        _now("since"),
        sa.PrimaryKeyConstraint("id", name="pk_leader_lease"),
        sa.CheckConstraint("id = 1", name=op.f("ck_leader_lease_one_row")),
    )
    op.execute("INSERT INTO leader_lease (id, epoch, holder) VALUES (1, 0, '')")
    op.create_table(
        "found_blocks",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("block_hash", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _now("created_at"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_found_blocks"),
        sa.UniqueConstraint("block_hash", name="uq_found_blocks_block_hash"),
    )
    op.create_table(
        "window_view",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _now("published_at"),
        sa.PrimaryKeyConstraint("id", name="pk_window_view"),
        sa.CheckConstraint("id = 1", name=op.f("ck_window_view_one_row")),
    )
    op.create_table(
        "leader_requests",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _now("created_at"),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_leader_requests"),
        sa.CheckConstraint("kind IN ('publish', 'broadcast', 'fallback')",
                           name=op.f("ck_leader_requests_known_kind")),
    )


def downgrade() -> None:
    op.drop_table("leader_requests")
    op.drop_table("window_view")
    op.drop_table("found_blocks")
    op.drop_table("leader_lease")
