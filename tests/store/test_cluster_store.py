"""The store pieces of a pool run as several processes (payouts.store.leader_lease, .cluster,
.notify) on PostgreSQL: the lease elects one holder, the fence refuses a stale leader's writes
and makes a new leader wait for the old one's transaction in flight, the found-block queue
dedupes, a forwarded request round-trips, the window view round-trips, and concurrent share
writers give the follower every share exactly once, in id order."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from payouts.store import notify
from payouts.store.cluster import (
    answer_request,
    mark_found_block_recorded,
    open_requests,
    pending_found_blocks,
    publish_view,
    queue_found_block,
    read_view,
    request_answer,
    submit_request,
)
from payouts.store.engine import make_engine
from payouts.store.leader_lease import Fence, StaleLeaderError, read_lease, try_acquire
from payouts.store.repositories import persist_shares, register_miner
from tests.store.conftest import make_batch, write_while_following

pytestmark = pytest.mark.postgres

P2WPKH = bytes.fromhex("0014") + bytes(20)


def _miner_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM miners")).scalar_one())


def test_one_holder_at_a_time_and_each_election_bumps_the_epoch(pg: Engine, url: str) -> None:
    a, b = notify.connect_raw(url), notify.connect_raw(url)
    try:
        assert try_acquire(a, "a") == 1
        assert try_acquire(b, "b") is None  # a holds it
        assert read_lease(pg).holder == "a"
        a.close()  # the session ends: its lock goes with it
        assert try_acquire(b, "b") == 2
        lease = read_lease(pg)
        assert (lease.epoch, lease.holder) == (2, "b")
        assert lease.since is not None
    finally:
        a.close()
        b.close()


def test_fence_refuses_a_stale_leader_and_writes_nothing(pg: Engine, url: str) -> None:
    old_conn = notify.connect_raw(url)
    epoch = try_acquire(old_conn, "old")
    assert epoch == 1
    old = make_engine(url)
    fence = Fence(old, epoch)
    try:
        register_miner(old, "before", P2WPKH)  # the leader writes while it leads
        old_conn.close()  # partitioned: PostgreSQL dropped its lock session
        new_conn = notify.connect_raw(url)
        assert try_acquire(new_conn, "new") == 2
        with pytest.raises(StaleLeaderError) as err:
            register_miner(old, "after", P2WPKH)
        assert err.value.code == "stale-leader"
        assert err.value.context == {"epoch": 1, "current": 2}
        assert _miner_count(pg) == 1
        new_conn.close()
    finally:
        fence.remove()
        old.dispose()


def test_new_leader_waits_for_the_old_leaders_transaction_in_flight(pg: Engine, url: str
                                                                      ) -> None:
    old_conn = notify.connect_raw(url)
    old = make_engine(url)
    fence = Fence(old, try_acquire(old_conn, "old") or 0)
    conn = old.connect()
    tx = conn.begin()  # fenced: holds the lease row FOR SHARE until it ends
    conn.execute(sa.text("INSERT INTO miners (account, payout_script) VALUES ('m', :s)"),
                 {"s": P2WPKH})
    old_conn.close()
    elected: list[tuple[int | None, float]] = []
    new_conn = notify.connect_raw(url)

    def campaign() -> None:
        elected.append((try_acquire(new_conn, "new"), time.monotonic()))

    t = threading.Thread(target=campaign)
    t.start()
    time.sleep(0.5)
    assert elected == []  # the bump waits for the fenced transaction
    committed = time.monotonic()
    tx.commit()
    conn.close()
    t.join(5)
    assert elected and elected[0][0] == 2 and elected[0][1] >= committed
    assert _miner_count(pg) == 1  # the old leader's in-flight write landed, before epoch 2
    with pytest.raises(StaleLeaderError):
        register_miner(old, "later", P2WPKH)
    fence.remove()
    old.dispose()
    new_conn.close()


def test_found_block_queue_dedupes_and_is_consumed_once(pg: Engine) -> None:
    h = bytes(range(32))
    assert queue_found_block(pg, h, {"height": 101, "distribution_id": 3})
    assert not queue_found_block(pg, h, {"height": 101, "distribution_id": 3})  # other path
    (q,) = pending_found_blocks(pg)
    assert (q.block_hash, q.payload) == (h, {"height": 101, "distribution_id": 3})
    mark_found_block_recorded(pg, q.id)
    assert pending_found_blocks(pg) == []
    assert not queue_found_block(pg, h, {"height": 101})  # recorded: never queued again


def test_request_round_trip_with_notifications(pg: Engine) -> None:
    leader = notify.Listener(pg, [notify.REQUEST])
    frontend = notify.Listener(pg, [notify.REPLY])
    try:
        leader.wait(0.0)  # LISTEN before anything is sent
        frontend.wait(0.0)
        rid = submit_request(pg, "publish", {"estimated_revenue": 5000})
        assert (notify.REQUEST, str(rid)) in leader.wait(2.0)
        (req,) = open_requests(pg)
        assert (req.id, req.kind, req.body) == (rid, "publish", {"estimated_revenue": 5000})
        assert request_answer(pg, rid) is None
        assert answer_request(pg, rid, result={"distribution_id": 7})
        assert not answer_request(pg, rid, error={"code": "x"})  # answered once
        assert (notify.REPLY, str(rid)) in frontend.wait(2.0)
        assert request_answer(pg, rid) == ({"distribution_id": 7}, None)
        assert open_requests(pg) == []
    finally:
        leader.close()
        frontend.close()


def test_unknown_request_kind_is_refused(pg: Engine) -> None:
    from payouts.errors import ValidationError

    with pytest.raises(ValidationError):
        submit_request(pg, "steal", {})
    assert open_requests(pg) == []


def test_window_view_round_trip(pg: Engine) -> None:
    assert read_view(pg) is None
    body = {"shares": 12, "weights": {"a": "340282366920938463463374607431768211457"}}
    v1 = publish_view(pg, 3, body)
    got = read_view(pg)
    assert got is not None and (got.version, got.epoch, got.body) == (v1, 3, body)
    assert read_view(pg, newer_than=v1) is None
    v2 = publish_view(pg, 4, {"shares": 13})
    assert v2 == v1 + 1
    got = read_view(pg, newer_than=v1)
    assert got is not None and got.body == {"shares": 13}


def test_concurrent_share_writers_reach_the_follower_once_in_id_order(pg: Engine, url: str
                                                                       ) -> None:
    """Four writers (each its own engine, as separate frontends) commit batches concurrently
    while a follower reads ``id > cursor`` as the leader does; every acknowledged share is seen
    exactly once, in id order, and none is passed over."""
    miner = register_miner(pg, "m", P2WPKH).id
    acked: list[str] = []
    acked_lock = threading.Lock()

    def write(w: int, eng: Engine) -> None:
        rng = random.Random(w)
        for b in range(25):
            keys = [f"w{w}-b{b}-{i}" for i in range(rng.randint(1, 400))]
            persist_shares(eng, make_batch(keys, miner_id=miner, difficulty=1))
            with acked_lock:
                acked.extend(keys)

    seen = write_while_following(pg, url, write)
    with pg.connect() as conn:
        stored = conn.execute(sa.text("SELECT id, share_key FROM shares ORDER BY id")).all()
    assert len(seen) == len(set(seen)) == len(stored) == len(acked)
    assert seen == [r[0] for r in stored]  # exactly the stored ids, in order, none skipped
    assert (np.diff(seen) > 0).all()
    assert {r[1] for r in stored} == set(acked)


def test_lease_gauges_follow_elections(pg: Engine, url: str) -> None:
    from api.metrics import lease_gauges

    assert lease_gauges(pg)["epoch"] == 0
    conn = notify.connect_raw(url)
    try:
        assert try_acquire(conn, "x") == 1
        g = lease_gauges(pg)
        assert g["epoch"] == 1 and g["since"] > 1.7e9
    finally:
        conn.close()
