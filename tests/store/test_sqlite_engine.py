"""SQLite engine settings: durable commits (ARCHITECTURE invariant 6) with batched checkpoints."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from payouts.store import migrate
from payouts.store.engine import WAL_AUTOCHECKPOINT_PAGES, WAL_SIZE_LIMIT_BYTES, make_engine
from payouts.store.repositories import persist_shares, register_miner
from tests.store.conftest import make_batch

P2WPKH = b"\x00\x14" + bytes(20)


def test_file_database_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            got = {
                p: raw.execute(f"PRAGMA {p}").fetchone()[0]
                for p in (
                    "journal_mode",
                    "synchronous",
                    "foreign_keys",
                    "wal_autocheckpoint",
                    "journal_size_limit",
                    "cache_size",
                )
            }
    finally:
        engine.dispose()
    assert got == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL: the WAL is fsynced at every COMMIT
        "foreign_keys": 1,
        "wal_autocheckpoint": WAL_AUTOCHECKPOINT_PAGES,
        "journal_size_limit": WAL_SIZE_LIMIT_BYTES,
        "cache_size": -65536,
    }


def test_committed_batch_is_in_the_files_before_any_checkpoint(tmp_path: Path) -> None:
    """With checkpoints batched, an acknowledged batch may live only in the WAL: a copy of the
    database and WAL files taken while the engine is still open (a crash image, without the
    shared-memory index) must recover every row."""
    db = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        migrate.upgrade(engine)
        miner = register_miner(engine, "m0", P2WPKH).id
        batch = make_batch([f"k{i:05d}" for i in range(3000)], miner_id=miner)
        assert persist_shares(engine, batch).size == 3000
        wal = db.with_name(db.name + "-wal")
        # Far below the checkpoint threshold: the committed rows are only in the WAL.
        assert wal.stat().st_size > 0
        crash = tmp_path / "crash"
        crash.mkdir()
        shutil.copy(db, crash / db.name)
        shutil.copy(wal, crash / wal.name)
    finally:
        engine.dispose()
    copy = sqlite3.connect(crash / db.name)
    try:
        keys = [r[0] for r in copy.execute("SELECT share_key FROM shares ORDER BY id")]
    finally:
        copy.close()
    assert keys == batch.key
