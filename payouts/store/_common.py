"""Small helpers shared by the repositories (transaction mode, integer checks)."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from payouts.store.engine import SQLITE_BEGIN_OPTION

MAX_MONEY = 21_000_000 * 100_000_000


def write_connection(engine: Engine) -> Connection:
    """A connection whose transaction takes the write lock at BEGIN on SQLite.

    Read-validate-write transactions (balances, max distribution id) must not be overtaken by a
    concurrent writer between the read and the write; PostgreSQL gets row/table locks instead.
    """
    conn = engine.connect()
    if engine.dialect.name == "sqlite":
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    return conn


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
