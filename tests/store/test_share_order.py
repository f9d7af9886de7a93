"""Share order on PostgreSQL with concurrent writers (payouts/store/shares.py, ``_copy_sorted``;
docs/deployment.md "Share order"): a batch's COPY runs while another batch's transaction is
open (the order lock covers only the id reservation), yet commits become visible in id order;
batches with keys in common, written at once by several writers, store each key once and the
follower sees every id once, in order; a failure while the reservation lock is held does not
leave it held."""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payouts.store import shares as shares_mod
from payouts.store.engine import make_engine
from payouts.store.repositories import persist_shares, register_miner
from tests.store.conftest import make_batch, write_while_following

pytestmark = pytest.mark.postgres

P2WPKH = bytes.fromhex("0014") + bytes(20)


def _stored_ids(engine: Engine) -> list[int]:
    return [int(i) for i, in _rows(engine, "SELECT id FROM shares ORDER BY id")]


def _rows(engine: Engine, q: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(q)).all())


def test_a_later_batch_copies_while_an_earlier_one_is_open_and_commits_after_it(
        pg: Engine, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer A takes its ids and COPYs, then is held before its COMMIT. Writer B, on another
    connection, takes later ids and COPYs meanwhile (with the lock held to COMMIT, as before,
    it could not even take its ids) and then waits for A's turn: neither batch is visible
    while A is held, and once A commits both are, A's ids below B's."""
    miner = register_miner(pg, "m", P2WPKH).id
    real_wait = shares_mod._wait_turn
    a_copied, b_copied, release = threading.Event(), threading.Event(), threading.Event()

    def wait_turn(cur: Any, ids: Any) -> None:
        name = threading.current_thread().name
        if name == "A":
            a_copied.set()
            assert release.wait(30)
        elif name == "B":
            b_copied.set()
        real_wait(cur, ids)

    monkeypatch.setattr(shares_mod, "_wait_turn", wait_turn)
    engines = [make_engine(url), make_engine(url)]
    done: dict[str, Any] = {}

    def write(name: str, eng: Engine) -> None:
        keys = [f"{name}-{i}" for i in range(500)]
        done[name] = persist_shares(eng, make_batch(keys, miner_id=miner, difficulty=1))

    a = threading.Thread(target=write, args=("A", engines[0]), name="A")
    a.start()
    assert a_copied.wait(30)
    b = threading.Thread(target=write, args=("B", engines[1]), name="B")
    b.start()
    try:
        assert b_copied.wait(15), "B's COPY waited for A's transaction (the lock spans it)"
        b.join(1.0)
        assert b.is_alive()  # B waits for A's turn before its COMMIT
        assert _stored_ids(pg) == []  # nothing visible out of order
    finally:
        release.set()
        a.join(30)
        b.join(30)
    for e in engines:
        e.dispose()
    assert len(done["A"]) == len(done["B"]) == 500
    rows = _rows(pg, "SELECT id, share_key FROM shares ORDER BY id")
    assert [k[0] for _i, k in rows] == ["A"] * 500 + ["B"] * 500
    assert [int(i) for i, _k in rows] == list(range(rows[0][0], rows[0][0] + 1000))


def test_overlapping_batches_from_concurrent_writers_store_each_key_once_in_order(
        pg: Engine, url: str) -> None:
    """Four writers send batches that share keys (a batch re-sent to another frontend while
    the first is still in flight) while a follower reads ``id > cursor``: every key stored
    once, every batch answered (two batches that wait for each other are retried, not
    failed), the follower sees every stored id once, in order."""
    miner = register_miner(pg, "m", P2WPKH).id
    accepted = [0] * 4

    def write(w: int, eng: Engine) -> None:
        rng = random.Random(w)
        for _ in range(15):
            # Keys of a common pool: each batch overlaps others' batches.
            keys = sorted({f"k{rng.randrange(3000)}" for _k in range(rng.randint(50, 300))})
            new = persist_shares(eng, make_batch(keys, miner_id=miner, difficulty=1))
            accepted[w] += len(new)

    seen = write_while_following(pg, url, write)
    stored = _rows(pg, "SELECT id, share_key FROM shares ORDER BY id")
    assert len({k for _i, k in stored}) == len(stored) == sum(accepted)
    assert seen == [int(i) for i, _k in stored]
    assert (np.diff(seen) > 0).all()


def test_a_failure_under_the_reservation_lock_does_not_keep_it(
        pg: Engine, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reservation lock is a session lock (it must end before the COPY, which a
    transaction lock cannot): a batch whose reservation fails ends its session, so another
    writer is not stopped behind a pooled connection that still holds the lock."""
    miner = register_miner(pg, "m", P2WPKH).id
    first, second = make_engine(url), make_engine(url)
    good_sql = shares_mod._PREPARE_SQL
    monkeypatch.setattr(shares_mod, "_PREPARE_SQL", "SELECT no_such_function(%s, %s)")
    from psycopg import errors as pg_errors

    with pytest.raises(pg_errors.UndefinedFunction):
        persist_shares(first, make_batch(["x-0", "x-1"], miner_id=miner, difficulty=1))
    monkeypatch.setattr(shares_mod, "_PREPARE_SQL", good_sql)
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(persist_shares(
        second, make_batch(["y-0"], miner_id=miner, difficulty=1))))
    t.start()
    t.join(20)
    assert not t.is_alive(), "the reservation lock was left held by the failed batch"
    assert len(out[0]) == 1
    # The failed batch wrote nothing, and its engine works again (a fresh session).
    assert len(persist_shares(first, make_batch(["x-0"], miner_id=miner, difficulty=1))) == 1
    assert sorted(k for _i, k in _rows(pg, "SELECT id, share_key FROM shares")) == [
        "x-0", "y-0"]
    first.dispose()
    second.dispose()
