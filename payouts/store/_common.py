"""Small helpers shared by the repositories (transaction mode, integer checks, id lists)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from payouts.store.engine import SQLITE_BEGIN_OPTION
from payouts.tx.txout import MAX_MONEY

__all__ = ["MAX_MONEY", "id_list", "is_int", "raw_cursor", "write_connection"]


def raw_cursor(conn: Connection) -> Any:
    """A DBAPI cursor on ``conn``'s connection, inside its transaction (bulk statements)."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def id_list(conn: Connection, ids: Sequence[int]) -> tuple[str, Any]:
    """``(sql, param)`` that selects the set ``ids`` in ONE bind parameter, whatever its size:
    ``= ANY(%s)`` over a PostgreSQL array, ``IN (SELECT value FROM json_each(?))`` on SQLite.
    An ``IN (...)`` with one parameter per id breaks at 65,535 ids on PostgreSQL (its protocol
    limit) and at 32,766 on SQLite. Use as ``f"... WHERE miner_id {sql}"`` with ``(param,)``."""
    if conn.dialect.name == "postgresql":
        return "= ANY(%s)", list(ids)
    return "IN (SELECT value FROM json_each(?))", json.dumps(list(ids))


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

