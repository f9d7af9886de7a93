"""One autocommit DBAPI connection per thread for the API's hottest reads (the balance read,
every request's token lookup), outside SQLAlchemy's pool (issue #17)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from sqlalchemy import Engine


class _HotReads(threading.local):
    """One autocommit DBAPI connection per thread for the API's hottest reads.

    Why not ``engine.connect()``: on SQLite a pooled SQLAlchemy connection emits BEGIN, the
    query and ROLLBACK, and the checkout/compile bookkeeping costs more than the indexed query
    itself (~40% of a balance request's CPU). A single autocommit statement on a connection
    kept by this thread sees every committed write (each statement is its own snapshot) and is
    never left idle in a transaction.
    """

    conn: Any = None
    engine: Engine | None = None


_hot = _HotReads()


def _hot_connection(engine: Engine) -> Any:
    if _hot.conn is not None and _hot.engine is engine:
        return _hot.conn
    if _hot.conn is not None:  # this thread moved to another engine: close, don't pool, the old
        with contextlib.suppress(Exception):
            _hot.conn.close()
    raw = engine.raw_connection()
    driver: Any = raw.driver_connection
    # Out of the pool for good: its autocommit mode must never reach a caller that checks a
    # connection out for a transaction (LOCK TABLE needs one); we close it ourselves.
    raw.detach()
    if engine.dialect.name == "postgresql":
        driver.autocommit = True
    _hot.conn, _hot.engine = driver, engine
    return driver


def hot_query(engine: Engine, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Every row of one statement (the driver's paramstyle: ``?`` on SQLite, ``%s`` on
    PostgreSQL) on this thread's hot connection (:class:`_HotReads`),
    retried once on a fresh connection if the old one was dropped (a server restart)."""
    for attempt in (0, 1):
        conn = _hot_connection(engine)
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, params)
                return list(cur.fetchall())
            finally:
                cur.close()
        except engine.dialect.loaded_dbapi.OperationalError:
            _hot.conn = None
            with contextlib.suppress(Exception):  # the connection is gone either way
                conn.close()
            if attempt:
                raise
    raise AssertionError("unreachable")


__all__ = ["hot_query"]
