"""Engine factory: one place that makes "acknowledged means durable" true per backend.

ARCHITECTURE invariant 6: a share batch acknowledged to its sender survives a crash. On SQLite
that needs WAL plus ``synchronous=FULL`` (WAL's default NORMAL may lose the last commits on power
loss) and foreign keys switched on per connection. PostgreSQL's defaults (``fsync=on``,
``synchronous_commit=on``) already give it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

# Execution option read by the SQLite ``begin`` hook: ``{"sqlite_begin": "IMMEDIATE"}`` takes the
# write lock at BEGIN, so a read-then-write transaction cannot be overtaken by another writer.
SQLITE_BEGIN_OPTION = "sqlite_begin"

# WAL pages (4 KiB each) after which a commit checkpoints: 32768 pages = 128 MiB.
WAL_AUTOCHECKPOINT_PAGES = 32_768
WAL_SIZE_LIMIT_BYTES = 128 * 1024 * 1024


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or ``None`` for in-memory databases."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    if u.database.startswith("file:"):
        return None
    return Path(u.database)


def make_engine(url: str | URL, **engine_kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the store's durability settings.

    SQLite: WAL (checkpointed every 128 MiB), ``synchronous=FULL``, ``foreign_keys=ON``, a 64 MiB
    page cache, a 10 s busy timeout, and explicit transaction control (the driver's implicit BEGIN
    is switched off so ``BEGIN IMMEDIATE`` is possible); the parent directory of the database file
    is created if missing. Extra keyword arguments go to :func:`sqlalchemy.create_engine`
    (``connect_args`` is merged).
    """
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(u, **engine_kwargs)

    path = sqlite_path(u)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": 10.0, **engine_kwargs.pop("connect_args", {})}
    engine = create_engine(u, connect_args=connect_args, **engine_kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # None = autocommit at the driver level; SQLAlchemy's begin hook below emits BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if path is not None:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            # The default 2 MiB page cache thrashes once the share_key index outgrows it
            # (unordered keys touch random leaf pages); 64 MiB keeps it resident far longer.
            cur.execute("PRAGMA cache_size=-65536")
            if path is not None:
                # Checkpoint every ~128 MiB of WAL instead of SQLite's 4 MiB default. A 10,000-share
                # batch on a 1M-share table dirties thousands of random share_key index pages, so
                # the default checkpointed (and fsynced the database) after every batch, writing
                # the same hot index pages again each time; batching checkpoints writes each page
                # once per ~5 batches (benchmarks/bench_store.py, 1M present: ~45k -> ~70k/s).
                # Durability is unchanged: every COMMIT still fsyncs the WAL (synchronous=FULL).
                cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
                # After a checkpoint resets the WAL, trim the file back rather than keep the
                # high-water mark of a burst (or of a checkpoint held back by a long reader).
                cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        finally:
            cur.close()

    # Writers of this process queue on a lock instead of on SQLite's busy handler: that one
    # sleeps with back-off (up to 100 ms a try) even when the lock frees a millisecond later,
    # which put ~100-200 ms on share ingest while a ledger chunk was being written (issue #11:
    # ingest p99 <= 50 ms while a block is recorded). One SQLite database has one writer anyway.
    writers = threading.Lock()
    wait = float(connect_args["timeout"])

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"bad {SQLITE_BEGIN_OPTION} execution option: {mode!r}")
        if mode != "DEFERRED":
            if not writers.acquire(timeout=wait):
                raise TimeoutError(f"no SQLite write lock within {wait:g} s")
            conn.info[_WRITER] = True
        try:
            conn.exec_driver_sql(f"BEGIN {mode}")
        except BaseException:
            _release(conn)
            raise

    def _release(conn: Connection) -> None:
        if conn.info.pop(_WRITER, False):
            writers.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)
    return engine


_WRITER = "payouts_sqlite_writer"


def insert_or_skip(conn: Connection, table: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` into ``table`` in ``conn``'s dialect (PostgreSQL or
    SQLite; add ``.values(...)``). The dialect modules are imported here, on first use: the
    PostgreSQL one pulls in every PostgreSQL driver's dialect (asyncpg's among them), ~0.1 s of
    every process start otherwise."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()
