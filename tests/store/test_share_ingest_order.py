"""Share ingest write order: rows reach the database sorted by key, ids still follow the batch.

PostgreSQL COPYs a batch in ``share_key`` order with ids reserved in batch order, and falls back
to ``INSERT … ON CONFLICT`` only when a key already exists (payouts/store/shares.py). These tests
pin what that must not change: arrival (id) order is batch order on both paths, the returned
index is exact, concurrent writers with overlapping keys in different orders neither deadlock nor
double-insert, and a conflict on anything but ``share_key`` surfaces with nothing written.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import psycopg
import pytest
from sqlalchemy import Engine

from payouts.store.repositories import iter_share_chunks, persist_shares, register_miner
from tests.store.conftest import count, make_batch

P2WPKH = bytes.fromhex("0014") + bytes(20)


@pytest.fixture
def miner(engine: Engine) -> int:
    return register_miner(engine, "m0", P2WPKH).id


def _stored(engine: Engine) -> tuple[list[int], list[str], list[int]]:
    """(ids, keys, difficulties) of every stored share in id order."""
    ids: list[int] = []
    keys: list[str] = []
    diffs: list[int] = []
    for chunk_ids, chunk in iter_share_chunks(engine, chunk=997):
        ids += chunk_ids.tolist()
        keys += list(chunk.key)
        diffs += chunk.difficulty.tolist()
    return ids, keys, diffs


def _shuffled_keys(n: int, seed: int) -> list[str]:
    # Mixed widths, cases and non-ASCII characters, so key order, code-point order and the
    # batch order all differ.
    rng = random.Random(seed)
    alphabet = "0123456789abcdefXYZ_-:é€𝄞"
    keys = {"".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(n * 2)}
    out = sorted(keys)[:n]
    rng.shuffle(out)
    return out


def test_ids_follow_batch_order_not_key_order(engine: Engine, miner: int) -> None:
    keys = _shuffled_keys(3000, seed=1)
    assert keys != sorted(keys)
    new = persist_shares(engine, make_batch(keys, miner_id=miner, difficulty=list(range(1, 3001))))
    assert new.tolist() == list(range(3000))
    ids, stored_keys, diffs = _stored(engine)
    assert stored_keys == keys
    assert diffs == list(range(1, 3001))
    assert (np.diff(ids) > 0).all()


def test_overlapping_batch_gets_exact_index_and_batch_order(engine: Engine, miner: int) -> None:
    keys = _shuffled_keys(2000, seed=2)
    old = keys[::3]
    persist_shares(engine, make_batch(old, miner_id=miner, difficulty=7))
    rng = random.Random(3)
    batch_keys = keys[:]
    rng.shuffle(batch_keys)
    old_set = set(old)
    expected = [i for i, k in enumerate(batch_keys) if k not in old_set]

    new = persist_shares(
        engine, make_batch(batch_keys, miner_id=miner, difficulty=list(range(10, 2010)))
    )

    assert new.tolist() == expected
    assert new.dtype == np.intp
    ids, stored_keys, diffs = _stored(engine)
    assert stored_keys == old + [batch_keys[i] for i in expected]
    # Old rows keep their values; new rows carry theirs, in batch order after the old ones.
    assert diffs == [7] * len(old) + [10 + i for i in expected]
    assert (np.diff(ids) > 0).all()
    assert persist_shares(engine, make_batch(batch_keys, miner_id=miner)).size == 0
    assert count(engine, "shares") == 2000


def test_single_share_batch_and_resend(engine: Engine, miner: int) -> None:
    assert persist_shares(engine, make_batch(["only"], miner_id=miner)).tolist() == [0]
    assert persist_shares(engine, make_batch(["only"], miner_id=miner)).size == 0
    assert persist_shares(engine, make_batch(["only", "next"], miner_id=miner)).tolist() == [1]
    assert _stored(engine)[1] == ["only", "next"]


def test_concurrent_shuffled_overlaps_insert_each_key_once(engine: Engine, miner: int) -> None:
    # Every writer sends overlapping keys in its own order; with the rows written in key order
    # the writers wait for each other but cannot deadlock (a deadlock would surface as an error).
    keys = _shuffled_keys(4000, seed=4)
    writers = 4
    batches = []
    for w in range(writers):
        part = keys[w * 800 : w * 800 + 1600]
        random.Random(100 + w).shuffle(part)
        batches.append([part[i : i + 400] for i in range(0, len(part), 400)])
    results: list[list[str]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def run(w: int) -> None:
        try:
            start.wait()
            for b in batches[w]:
                new = persist_shares(engine, make_batch(b, miner_id=miner))
                results[w] += [b[i] for i in new.tolist()]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    inserted = [k for r in results for k in r]
    sent = {k for per_writer in batches for b in per_writer for k in b}
    assert len(inserted) == len(set(inserted)) == len(sent) == count(engine, "shares")
    assert set(inserted) == sent


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_postgresql_id_conflict_surfaces_and_writes_nothing(engine: Engine, miner: int) -> None:
    # A sequence moved back makes the next ids collide with stored rows: that is a primary-key
    # conflict, a real fault, and must surface instead of being treated as "already stored".
    persist_shares(engine, make_batch(["a", "b", "c"], miner_id=miner))
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT setval('shares_id_seq', 1, false)")
    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        persist_shares(engine, make_batch(["d", "e"], miner_id=miner))
    assert info.value.diag.constraint_name == "pk_shares"
    assert _stored(engine)[1] == ["a", "b", "c"]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_concurrent_writers_commit_in_id_order(engine: Engine, miner: int) -> None:
    """Issue #15: several processes write shares and one reads them by id (``id > last``).
    Ids are taken under a lock held to COMMIT, so they ascend in commit order: a reader that
    follows the newest id it saw never skips a row that commits later with a smaller id."""
    from payouts.store.engine import make_engine

    url = engine.url.render_as_string(hide_password=False)
    writers, batches, per = 4, 25, 40
    done = threading.Event()
    seen: list[int] = []

    def write(w: int) -> None:
        eng = make_engine(url)
        try:
            for b in range(batches):
                persist_shares(eng, make_batch([f"w{w}-{b}-{i}" for i in range(per)],
                                               miner_id=miner))
        finally:
            eng.dispose()

    def read() -> None:
        eng = make_engine(url)
        last = 0
        try:
            while True:
                finished = done.is_set()
                with eng.connect() as c:
                    ids = [r[0] for r in c.exec_driver_sql(
                        "SELECT id FROM shares WHERE id > %(last)s ORDER BY id",
                        {"last": last})]
                seen.extend(ids)
                if ids:
                    last = ids[-1]
                if finished:
                    return
        finally:
            eng.dispose()

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    stored, _, _ = _stored(engine)
    assert len(stored) == writers * batches * per
    assert seen == stored  # every row seen once, in id order, none passed over
