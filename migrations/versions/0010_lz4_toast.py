"""PostgreSQL stores the large per-block values with LZ4 instead of pglz.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

A published distribution (``distributions.body``, a few MB of JSON at 100,000 miners) and a
block's deferred ledger lines (``ledger_backlog.miner_ids``/``amounts``, 800 kB each) are
compressed by TOAST when written. With PostgreSQL's default, pglz, that took 300 ms for a 4.8 MB
document and 270 ms for the two arrays on the 2-core test machine, against 40 ms and 12 ms with
LZ4 (issue #11: publish and record at 100k miners within 300 ms). Per-column ``COMPRESSION``
needs PostgreSQL 14 built with LZ4 (the Debian and upstream packages are); elsewhere the column
keeps the server's default, said in a warning, and nothing else changes. Only new values are
written with LZ4; values already stored are read as they were. SQLite: nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("distributions", "body"), ("ledger_backlog", "miner_ids"),
           ("ledger_backlog", "amounts"))
log = logging.getLogger("alembic.runtime.migration")


def _set(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        # A savepoint: a server without LZ4 refuses the statement, and the migration goes on.
        sp = bind.begin_nested()
        try:
            bind.exec_driver_sql(
                f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION {method}')
            sp.commit()
        except Exception as e:  # any refusal leaves the column as it was
            sp.rollback()
            log.warning("%s.%s keeps the default compression: %s", table, column,
                        str(e).splitlines()[0])


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("default")
