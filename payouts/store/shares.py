"""Durable, idempotent share ingest and the start-up replay of the share log.

Implements ARCHITECTURE invariants 5 and 6 for shares: a batch is validated whole before anything
is written, by the one share validator :func:`payouts.accounting.validate.validate_batch` (a bad
batch writes nothing), :func:`persist_shares` returns only after COMMIT
(acknowledged = durable), and re-sending rows whose ``share_key`` is already stored inserts
nothing. The returned index tells the caller which rows were new, so only those reach the
in-memory share log.

Write paths (the speed targets are ≥100k shares/s on PostgreSQL, ≥50k/s on SQLite, batches of
10k). PostgreSQL, optimistic path: reserve one id per row from the ``shares`` sequence, then
``COPY`` the batch (binary) straight into ``shares`` with explicit ids and the rows sorted by
``share_key``, and COMMIT. Only when that COPY hits the ``share_key`` unique index (a re-sent or
overlapping batch) does it roll back and fall back: read which keys are stored, ``COPY`` the
others into a temporary staging table, ``INSERT … ON CONFLICT (share_key) DO NOTHING RETURNING
id`` (a pure re-send thus writes nothing). SQLite takes the write lock up
front (``BEGIN IMMEDIATE``), reads which keys exist, and ``executemany``-inserts the rest; holding
the lock makes that read exact.

Why this shape (measured on PostgreSQL 15, random keys, 10k-row batches, backend CPU per batch
about halved against staging + ``ON CONFLICT`` for every batch): the unique btree insert on
random keys is the dominant cost (memory stalls in ``_bt_compare``,
~55% of the backend's CPU); ``ON CONFLICT`` adds a second full index descent per row
(``ExecCheckIndexConstraints``) plus a speculative-insertion lock and confirm record, and
``INSERT … SELECT`` writes one heap WAL record per row where ``COPY`` writes one per page.
Feeding the index in key order turns the random leaf accesses into an ascending walk. Sorting by
key also gives every writer the same lock order on the unique index, so two overlapping batches
wait for each other but cannot deadlock.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, text

from payouts.accounting.shares import ShareBatch
from payouts.accounting.validate import unknown_miner_error, validate_batch
from payouts.store.engine import SQLITE_BEGIN_OPTION

Index = npt.NDArray[np.intp]
I64 = npt.NDArray[np.int64]

_COLUMNS = "share_key, miner_id, worker, difficulty, job_id, revenue, time_ms"
_KEY_CONSTRAINT = "uq_shares_share_key"
_ID_SEQUENCE = "shares_id_seq"
_STAGE = "payouts_share_stage"
_STAGE_FLAG = "payouts_share_stage_ready"
# ON COMMIT DELETE ROWS: the staging table empties itself at every commit, so a pooled
# connection can reuse it without a TRUNCATE and without catalog churn per batch.
_STAGE_DDL = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (
    id bigint NOT NULL,
    share_key text NOT NULL,
    miner_id bigint NOT NULL,
    worker text NOT NULL,
    difficulty bigint NOT NULL,
    job_id text NOT NULL,
    revenue bigint NOT NULL,
    time_ms bigint NOT NULL
) ON COMMIT DELETE ROWS
"""
_COPY_TYPES = ["int8", "text", "int8", "text", "int8", "text", "int8", "int8"]
# One round trip: the miners that exist, and one fresh id per row (strictly increasing, as
# nextval() runs row by row in this backend; not contiguous if another writer interleaves).
_PREPARE_SQL = (
    "SELECT ARRAY(SELECT id FROM miners WHERE id = ANY(%s)), "
    f"ARRAY(SELECT nextval('{_ID_SEQUENCE}') FROM generate_series(1, %s))"
)
# Share order on PostgreSQL (why: _copy_sorted). The id reservation is serialized by the
# two-key session advisory lock (SHARE_ORDER_LOCK, hashtext(current_schema())), scoped to the
# pool's schema like the leader's lock (payouts.store.leader_lease); 'pysh' as an int4. It is
# held only while a batch takes its ids and its turn, never across the COPY or the COMMIT.
SHARE_ORDER_LOCK = 0x70797368
SHARE_ORDER_SQL = "SELECT pg_advisory_lock(%s, hashtext(current_schema()))"
SHARE_ORDER_UNLOCK_SQL = "SELECT pg_advisory_unlock(%s, hashtext(current_schema()))"
# A batch's turn: a transaction-scoped advisory lock on its last id (one-key form: pg_locks
# shows the schema's hash as classid and the id's low 32 bits as objid; batches in flight
# together are never 2^31 ids apart). Taken right after the ids, under the reservation lock,
# so every batch with smaller ids holds its turn before a later batch looks for it.
_TURN_KEY = "(hashtext(current_schema())::bigint << 32) | ({} & 4294967295)"
_TAKE_TURN_SQL = ("SELECT pg_advisory_xact_lock("
                  + _TURN_KEY.format(f"currval('{_ID_SEQUENCE}')") + ")")
# Before COMMIT, the common case first: wait (shared) for the turn of the batch that took the
# ids just before ours (its last id is our first id - 1), then look whether that id is stored.
# If it is, that batch committed, and it committed only once every batch before it was over:
# our turn has come. (Two statements, each with its own snapshot: the second sees the commit.)
_WAIT_PREVIOUS_SQL = ("SELECT pg_advisory_xact_lock_shared("
                      + _TURN_KEY.format("%s::bigint") + ")")
_PREVIOUS_STORED_SQL = "SELECT EXISTS (SELECT 1 FROM shares WHERE id = %s)"
# Otherwise (that batch rolled back, or its last row was a duplicate it skipped): wait (shared)
# for the turn of every batch of this schema still in flight whose last id is below our first
# id (%s), read from pg_locks (~1 ms: the whole lock table is scanned).
_WAIT_TURN_SQL = (
    "SELECT pg_advisory_xact_lock_shared(" + _TURN_KEY.format("objid::bigint") + ") "
    "FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
    "AND mode = 'ExclusiveLock' AND pid <> pg_backend_pid() "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = (hashtext(current_schema())::bigint & 4294967295)::oid "
    "AND ((%s::bigint - objid::bigint) & 4294967295) BETWEEN 1 AND 2147483647"
)
# Two batches with a key in common can each wait for the other (the later one for its turn,
# the earlier one on the unique index entry the later one wrote): PostgreSQL's deadlock
# detector aborts one, which then runs again from the start.
_DEADLOCK_RETRIES = 5
_EMPTY: Index = np.zeros(0, dtype=np.intp)
_NO_IDS: I64 = np.zeros(0, dtype=np.int64)


def _check_miners(found: set[int], wanted: I64, batch: ShareBatch) -> None:
    """Rule 7 of :mod:`payouts.accounting.validate`, against the ``miners`` rows read inside
    the inserting transaction; the error names the first row of ``batch`` that is refused."""
    missing = sorted(set(wanted.tolist()) - found)
    if missing:
        raise unknown_miner_error(batch.miner_id, batch.key, missing)


def persist_shares(engine: Engine, batch: ShareBatch) -> Index:
    """:func:`persist_shares_with_ids` without the ids."""
    return persist_shares_with_ids(engine, batch)[0]


def persist_shares_with_ids(engine: Engine, batch: ShareBatch) -> tuple[Index, I64]:
    """Store a share batch durably; return the (ascending) indices of rows that were new, and
    the ids the store gave them (ascending, in the same order).

    Rows whose ``share_key`` is already stored are skipped, so re-sending a batch returns an empty
    index. The whole batch is checked first by :func:`payouts.accounting.validate.validate_batch`
    (the miners against the ``miners`` rows, inside the inserting transaction) and nothing is
    written if any row is bad: unknown ``miner_id`` → :class:`~payouts.errors.UnknownMinerError`,
    difficulty ≤ 0 → :class:`~payouts.errors.InvalidDifficultyError`, a key twice in the batch →
    :class:`~payouts.errors.DuplicateKeyError`, negative revenue or time, over-long or
    non-string fields → :class:`~payouts.errors.ValidationError`; those a row causes name it
    (:class:`~payouts.errors.ShareRowError`). New rows get ids in batch order. Returns after
    COMMIT.
    """
    clean = validate_batch(batch)
    if len(clean) == 0:
        return _EMPTY, _NO_IDS
    unique_miners = np.unique(clean.miner_id)
    if engine.dialect.name == "postgresql":
        return _persist_postgresql(engine, clean, unique_miners)
    if engine.dialect.name == "sqlite":
        return _persist_sqlite(engine, clean, unique_miners)
    raise NotImplementedError(f"persist_shares does not support {engine.dialect.name}")


def _persist_postgresql(
    engine: Engine, clean: ShareBatch, unique_miners: I64
) -> tuple[Index, I64]:
    """Optimistic COPY of the whole (validated) batch; the ON CONFLICT path only if a key
    already exists.

    A failed COPY rolls back completely (its transaction is discarded), so falling back cannot
    write a row twice; the ids it reserved are simply never used (ids only need batch order).
    """
    from psycopg import errors as pg_errors  # only PostgreSQL stores need the driver

    for attempt in range(_DEADLOCK_RETRIES):
        try:
            try:
                return _copy_all_new(engine, clean, unique_miners)
            except pg_errors.UniqueViolation as exc:
                if exc.diag.constraint_name != _KEY_CONSTRAINT:
                    raise
            return _insert_only_new(engine, clean)
        except pg_errors.DeadlockDetected:
            # Rolled back whole (nothing written); the other batch goes on.
            if attempt == _DEADLOCK_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _copy_sorted(conn: Connection, cur: Any, table: str, batch: ShareBatch,
                 unique_miners: I64, whole: ShareBatch | None = None) -> I64:
    """Check the miners, reserve one id per row and the batch's turn, and COPY the batch
    (binary) into ``table`` with the rows in ``share_key`` order; return the ids, ascending in
    batch order. The caller waits for its turn (:func:`_wait_turn`) right before COMMIT.

    ``batch`` holds validated int64 columns; it is part of ``whole`` (default: itself), the
    batch an unknown miner's row is reported against. Python orders ``str`` by code point,
    which is UTF-8 byte order, i.e. the order of the ``COLLATE "C"`` unique index.
    """
    keys = batch.key
    n = len(keys)
    # Why the order: whoever reads shares by id (the leader's share follower, the dashboards'
    # fold, a restart's replay; docs/deployment.md "Share order") reads ``id > last`` and must
    # never pass over a row that commits later with a smaller id, so ids must become visible in
    # id order across every process writing shares. (Reading below pg_snapshot_xmin instead
    # would need a second cursor (xid, id) that replay does not have.)
    #
    # How, without serializing the batches' work: under the session lock SHARE_ORDER_LOCK a
    # batch takes its ids and its turn (an xact lock on its last id), then releases the lock;
    # the COPY runs concurrently with other batches; right before COMMIT the batch waits for
    # the turn of every batch that took smaller ids and is still in flight (all took their
    # turn before we took our ids): each has committed, or rolled back and its ids are never
    # used. PostgreSQL makes a commit visible before it releases the transaction's locks, so
    # commits become visible in id order. Before, the lock was held from the ids to the
    # COMMIT and the COPY of every frontend ran one at a time (docs/BENCHMARKS.md, "Several
    # processes").
    #
    # Pipeline mode: the queries go out now and are answered later, so the server reserves the
    # ids (~1 µs per nextval) while this side sorts the batch.
    raw = cur.connection
    lock_cur = raw.cursor()
    try:
        with raw.pipeline():
            lock_cur.execute(SHARE_ORDER_SQL, (SHARE_ORDER_LOCK,))
            cur.execute(_PREPARE_SQL, (unique_miners.tolist(), n))
            lock_cur.execute(_TAKE_TURN_SQL)
            lock_cur.execute(SHARE_ORDER_UNLOCK_SQL, (SHARE_ORDER_LOCK,))
            order = sorted(range(n), key=keys.__getitem__)
            at = np.asarray(order, dtype=np.intp)
            # itemgetter with one argument returns the item itself, not a 1-tuple.
            take = operator.itemgetter(*order) if n > 1 else lambda seq: (seq[order[0]],)
            columns = [take(keys), take(batch.worker), take(batch.job_id)]
            miner_id, difficulty, revenue, time_ms = (
                c[at].tolist()
                for c in (batch.miner_id, batch.difficulty, batch.revenue, batch.time_ms)
            )
            found, reserved = cur.fetchone()
    except BaseException:
        # A session lock outlives a rolled-back transaction: if anything failed between the
        # lock and its unlock, end the session (PostgreSQL releases its locks) rather than
        # hand a connection holding SHARE_ORDER_LOCK back to the pool, which would stop
        # every writer of the pool.
        conn.invalidate()
        raise
    finally:
        lock_cur.close()
    _check_miners(set(found), unique_miners, batch if whole is None else whole)
    # nextval() ran row by row in one backend, so these ascend; sorting again costs nothing.
    ids = np.sort(np.array(reserved, dtype=np.int64))
    with cur.copy(f"COPY {table} (id, {_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_COPY_TYPES)
        write = copy.write_row
        for row in zip(
            ids[at].tolist(),
            columns[0],
            miner_id,
            columns[1],
            difficulty,
            columns[2],
            revenue,
            time_ms,
            strict=True,
        ):
            write(row)
    return ids


def _wait_turn(cur: Any, ids: I64) -> None:
    """Wait until every batch that took ids below ``ids`` is over (committed or rolled back);
    call it last before COMMIT (:func:`_copy_sorted`)."""
    first = int(ids[0])
    with cur.connection.pipeline():
        cur.execute(_WAIT_PREVIOUS_SQL, (first - 1,))
        cur.execute(_PREVIOUS_STORED_SQL, (first - 1,))
        (stored,) = cur.fetchone()
    if not stored:
        cur.execute(_WAIT_TURN_SQL, (first,))


def _copy_all_new(engine: Engine, batch: ShareBatch, unique_miners: I64) -> tuple[Index, I64]:
    with engine.begin() as conn:
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur:
            ids = _copy_sorted(conn, cur, "shares", batch, unique_miners)
            _wait_turn(cur, ids)
    return np.arange(len(batch), dtype=np.intp), ids


def _insert_only_new(engine: Engine, batch: ShareBatch) -> tuple[Index, I64]:
    """The path for a batch that overlaps stored keys (a re-send, or a concurrent writer).

    Stored shares are never deleted, so a key found here stays stored: those rows are dropped
    before anything is written, and a pure re-send writes nothing at all. The rest may still
    race a concurrent writer, which ``ON CONFLICT DO NOTHING`` settles.
    """
    keys = batch.key
    with engine.begin() as conn:
        fairy = conn.connection
        raw: Any = fairy.driver_connection
        with raw.cursor() as cur:
            cur.execute("SELECT share_key FROM shares WHERE share_key = ANY(%s)", (list(keys),))
            stored = {r[0] for r in cur.fetchall()}
            unseen = np.flatnonzero(
                np.fromiter((k not in stored for k in keys), dtype=bool, count=len(keys))
            )
            if unseen.size == 0:
                return _EMPTY, _NO_IDS
            rest = batch.take(unseen)
            if not fairy.info.get(_STAGE_FLAG):
                cur.execute(_STAGE_DDL)
            ids = _copy_sorted(conn, cur, _STAGE, rest, np.unique(rest.miner_id), whole=batch)
            # Key order again (same lock order as the COPY path: no deadlock between writers).
            cur.execute(
                f"INSERT INTO shares (id, {_COLUMNS}) SELECT id, {_COLUMNS} FROM {_STAGE} "
                "ORDER BY share_key ON CONFLICT (share_key) DO NOTHING RETURNING id"
            )
            new_ids = np.array([r[0] for r in cur.fetchall()], dtype=np.int64)
            _wait_turn(cur, ids)
    # Only after COMMIT: a rolled-back CREATE TEMPORARY TABLE leaves no table behind.
    fairy.info[_STAGE_FLAG] = True
    # ids ascend in the order of ``rest``, so each new id's rank among them is its row there.
    new_ids.sort()
    return unseen[np.searchsorted(ids, new_ids)].astype(np.intp), new_ids


def _persist_sqlite(engine: Engine, batch: ShareBatch, unique_miners: I64) -> tuple[Index, I64]:
    """Key read then plain INSERT, under the write lock taken at BEGIN.

    With 1M shares stored, a 10k batch costs (measured, benchmarks/bench_store.py) ~15% in the
    key read, ~30% in the INSERT and the rest in COMMIT: SQLite's WAL holds whole pages, and
    random keys dirty thousands of ``share_key`` index leaves per batch, each written and fsynced
    in full (checkpoint frequency: see make_engine). Also measured, no gain within noise (±5%):
    dropping the key read for ``INSERT … ON CONFLICT DO NOTHING`` with explicit ids, inserting in
    key order (the dirty pages are the same), mmap, a 256 MiB cache, ``temp_store=MEMORY``, 1–2
    KiB pages (worse).
    """
    keys = batch.key
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            raw: Any = conn.connection.driver_connection
            cur = raw.cursor()
            try:
                cur.execute(
                    "SELECT id FROM miners WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(unique_miners.tolist()),),
                )
                _check_miners({r[0] for r in cur.fetchall()}, unique_miners, batch)
                cur.execute(
                    "SELECT share_key FROM shares "
                    "WHERE share_key IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(keys)),),
                )
                existing = {r[0] for r in cur.fetchall()}
                if existing:
                    new = np.fromiter(
                        (k not in existing for k in keys), dtype=bool, count=len(keys)
                    )
                    index = np.flatnonzero(new).astype(np.intp)
                else:
                    index = np.arange(len(keys), dtype=np.intp)
                if index.size == 0:
                    return _EMPTY, _NO_IDS
                rows: Iterator[tuple[Any, ...]] = zip(
                    keys,
                    batch.miner_id.tolist(),
                    batch.worker,
                    batch.difficulty.tolist(),
                    batch.job_id,
                    batch.revenue.tolist(),
                    batch.time_ms.tolist(),
                    strict=True,
                )
                if existing:
                    rows = (r for r in rows if r[0] not in existing)
                # Plain INSERT, not OR IGNORE: under the write lock no key can have appeared
                # since the read, so a conflict here is a real bug and must abort the batch.
                cur.executemany(
                    f"INSERT INTO shares ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
                # Under the write lock the rowids just taken are consecutive, ending here.
                last = int(cur.execute("SELECT last_insert_rowid()").fetchone()[0])
            finally:
                cur.close()
    return index, np.arange(last - len(index) + 1, last + 1, dtype=np.int64)


def _batch_from_rows(rows: Sequence[Sequence[Any]]) -> ShareBatch:
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if n else [()] * 7

    def ints(c: Sequence[Any]) -> I64:
        return np.fromiter(c, dtype=np.int64, count=n)

    return ShareBatch(
        key=list(cols[0]),
        miner_id=ints(cols[1]),
        worker=list(cols[2]),
        difficulty=ints(cols[3]),
        job_id=list(cols[4]),
        revenue=ints(cols[5]),
        time_ms=ints(cols[6]),
    )


def iter_share_chunks(
    engine: Engine, chunk: int = 50_000, after_id: int = 0
) -> Iterator[tuple[I64, ShareBatch]]:
    """Yield ``(ids, batch)`` chunks of all shares with ``id > after_id``, in id order.

    Keyset pagination (``WHERE id > last``) keeps every chunk an index range scan, and each chunk
    is read in its own short transaction so a long rebuild never holds a snapshot open.
    """
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    query = text(f"SELECT id, {_COLUMNS} FROM shares WHERE id > :after ORDER BY id LIMIT :limit")
    last = after_id
    while True:
        with engine.connect() as conn:
            rows = conn.execute(query, {"after": last, "limit": chunk}).all()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        yield ids, _batch_from_rows([r[1:] for r in rows])
        last = int(ids[-1])
        if len(rows) < chunk:
            return


def iter_shares(engine: Engine, chunk: int = 50_000, after_id: int = 0) -> Iterator[ShareBatch]:
    """Yield every stored share (``id > after_id``) as ShareBatch chunks, in id (arrival) order.

    This is the start-up rebuild of the in-memory share log.
    """
    for _ids, batch in iter_share_chunks(engine, chunk, after_id):
        yield batch


def count_shares(conn_or_engine: Engine | Connection) -> int:
    """Number of stored shares (tests, metrics)."""
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return count_shares(conn)
    return int(conn_or_engine.execute(text("SELECT COUNT(*) FROM shares")).scalar_one())
