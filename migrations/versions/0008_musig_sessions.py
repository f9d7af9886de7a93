"""MuSig2 signing sessions in the store: sessions, committee, nonces, partial signatures,
rejections (one session per settlement, served by every process).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Hand-written to match payouts/store/musig_models.py exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_ID_MAX = 64
CODE_MAX = 32
STATES = ("collecting-nonces", "collecting-partial-sigs", "complete", "failed")
PSIG_CHECKS = ("on-arrival", "on-aggregate")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _session_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["session_id"], ["musig_sessions.id"], ondelete="CASCADE",
                                   name=f"fk_{table}_session_id_musig_sessions")


def upgrade() -> None:
    op.create_table(
        "musig_sessions",
        sa.Column("id", sa.String(SESSION_ID_MAX), nullable=False),
        sa.Column("block_id", sa.BigInteger(), nullable=True),
        sa.Column("msg", sa.LargeBinary(32), nullable=False),
        sa.Column("taproot_merkle_root", sa.LargeBinary(32), nullable=True),
        sa.Column("max_signers", sa.Integer(), nullable=False),
        sa.Column("psig_check", sa.String(16), nullable=False),
        sa.Column("nonce_deadline", sa.Double(), nullable=False),
        sa.Column("sig_deadline", sa.Double(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("aggnonce", sa.LargeBinary(66), nullable=True),
        sa.Column("signature", sa.LargeBinary(64), nullable=True),
        sa.Column("failure_reason", sa.String(CODE_MAX), nullable=True),
        sa.Column("failure_at", sa.Double(), nullable=True),
        sa.Column("failure_detail", sa.Text(), nullable=True),
        sa.Column("failure_blame", sa.Text(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.PrimaryKeyConstraint("id", name="pk_musig_sessions"),
        sa.ForeignKeyConstraint(["block_id"], ["blocks.id"],
                                name="fk_musig_sessions_block_id_blocks"),
        sa.UniqueConstraint("block_id", name="uq_musig_sessions_block_id"),
        sa.CheckConstraint(_in("state", STATES), name=op.f("ck_musig_sessions_state_valid")),
        sa.CheckConstraint(_in("psig_check", PSIG_CHECKS),
                           name=op.f("ck_musig_sessions_psig_check_valid")),
    )
    op.create_table(
        "musig_committee",
        sa.Column("session_id", sa.String(SESSION_ID_MAX), nullable=False),
        sa.Column("signer_index", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("pubkey", sa.LargeBinary(33), nullable=False),
        sa.Column("last_bad_psig", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("session_id", "signer_index", name="pk_musig_committee"),
        _session_fk("musig_committee"),
    )
    op.create_table(
        "musig_nonces",
        sa.Column("session_id", sa.String(SESSION_ID_MAX), nullable=False),
        sa.Column("signer_index", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("pubnonce", sa.LargeBinary(66), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "signer_index", name="pk_musig_nonces"),
        _session_fk("musig_nonces"),
    )
    op.create_table(
        "musig_partial_sigs",
        sa.Column("session_id", sa.String(SESSION_ID_MAX), nullable=False),
        sa.Column("signer_index", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("psig", sa.LargeBinary(32), nullable=False),
        sa.Column("unverified_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("session_id", "signer_index", name="pk_musig_partial_sigs"),
        _session_fk("musig_partial_sigs"),
    )
    op.create_table(
        "musig_rejections",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False,
                  autoincrement=True),
        sa.Column("session_id", sa.String(SESSION_ID_MAX), nullable=False),
        sa.Column("signer_index", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(CODE_MAX), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_musig_rejections"),
        _session_fk("musig_rejections"),
    )
    op.create_index("ix_musig_rejections_session_id", "musig_rejections", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_musig_rejections_session_id", table_name="musig_rejections")
    for table in ("musig_rejections", "musig_partial_sigs", "musig_nonces", "musig_committee",
                  "musig_sessions"):
        op.drop_table(table)
