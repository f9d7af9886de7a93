"""Requests a cluster frontend forwards to the leader (payouts.cluster_frontend.LeaderRequests,
payouts.store.cluster), on PostgreSQL: identical settlement actions coalesce into one request;
a request a leader claimed is never closed under it, one nobody claimed is closed at the
timeout (503 no-leader) and no leader acts on it afterwards; and, with an in-process leader
(payouts.leader.LeaderWork on a kernel node), a forwarded broadcast / fallback answers through
a frontend's API exactly the problem the leader's own API gives, and the operator page's
settlement button forwards the same action."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from api import store as api_store
from api.app import create_app
from api.routers.pages import csrf_token
from payouts.cluster_frontend import (
    ForwardedSettlementActions,
    ForwardingPublisher,
    LeaderRequests,
    NoLeaderError,
)
from payouts.errors import ForwardedError
from payouts.leader import LeaderWork, found_payload
from payouts.node.kernel import KernelNode
from payouts.node.kernel_chain import KernelChain
from payouts.published_view import PublishedWindow
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.store import migrate, notify
from payouts.store.cluster import (
    RequestClaims,
    answer_request,
    close_unclaimed,
    open_requests,
    pending_found_blocks,
    queue_found_block,
    request_answer,
    submit_request,
)
from payouts.store.engine import make_engine
from payouts.store.leader_lease import try_acquire
from payouts.store.repositories import register_miner
from tests.jds.helpers import setup_chain
from tests.store.conftest import make_batch

pytestmark = pytest.mark.postgres


@pytest.fixture
def url(postgres: Any) -> str:
    return str(postgres.new_url())


@pytest.fixture
def pg(url: str) -> Iterator[Engine]:
    eng = make_engine(url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def _rows(engine: Engine, sql: str) -> list[Any]:
    """Rows of ``sql`` on a connection given back at once (one left open in a transaction
    would hold its locks until the session's DROP SCHEMA, which would wait for ever)."""
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).all())


def test_identical_settlement_actions_coalesce_publications_do_not(pg: Engine) -> None:
    a = submit_request(pg, "fallback", {"block_id": 3})
    assert submit_request(pg, "fallback", {"block_id": 3}) == a  # a retry joins the open one
    assert submit_request(pg, "broadcast", {"block_id": 3}) != a  # another action
    assert submit_request(pg, "fallback", {"block_id": 4}) != a  # another block
    p = submit_request(pg, "publish", {"estimated_revenue": 5})
    assert submit_request(pg, "publish", {"estimated_revenue": 5}) != p  # two publications
    assert answer_request(pg, a, error={"code": "x", "message": "", "context": {}})
    # Answered: the same action asked again is a new request (the operator asks again).
    assert submit_request(pg, "fallback", {"block_id": 3}) != a


def test_concurrent_identical_actions_from_two_frontends_are_one_request(pg: Engine) -> None:
    ids: list[int] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        ids.append(submit_request(pg, "fallback", {"block_id": 9}))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [r.id for r in open_requests(pg)] == ids[:1]


def test_a_claimed_request_is_not_closed_under_the_leader(pg: Engine, url: str) -> None:
    claims = RequestClaims(url)
    try:
        rid = submit_request(pg, "broadcast", {"block_id": 1})
        assert claims.claim(rid)
        gone = {"code": "no-leader", "message": "timed out", "context": {}}
        assert close_unclaimed(pg, rid, gone) is None  # the leader is acting: wait for it
        assert request_answer(pg, rid) is None
        assert answer_request(pg, rid, result={"ok": 1})
        claims.release(rid)
        assert close_unclaimed(pg, rid, gone) is False  # answered meanwhile
        assert request_answer(pg, rid) == ({"ok": 1}, None)
        # Unclaimed: closed, and a leader that claims it afterwards sees it answered.
        rid2 = submit_request(pg, "broadcast", {"block_id": 2})
        assert close_unclaimed(pg, rid2, gone) is True
        assert claims.claim(rid2) and request_answer(pg, rid2) == (None, gone)
        claims.release(rid2)
    finally:
        claims.close()


def test_no_leader_within_the_timeout_is_503_and_closes_the_request(pg: Engine) -> None:
    t0 = time.monotonic()
    with pytest.raises(NoLeaderError, match=r"no leader answered within 0\.5 s"):
        LeaderRequests(pg, 0.5).forward("fallback", {"block_id": 1})
    assert time.monotonic() - t0 >= 0.5
    assert open_requests(pg) == []  # closed: a leader elected later will not act on it
    ((error,),) = _rows(pg, "SELECT error FROM leader_requests")
    assert '"no-leader"' in error


def test_a_leader_acting_past_the_timeout_is_waited_for(pg: Engine, url: str) -> None:
    """The leader claimed the request and answers after the frontend's timeout: the caller
    gets the leader's answer, not 503 (the action ran: saying it did not would be a lie)."""
    claims = RequestClaims(url)

    def leader() -> None:
        while not open_requests(pg):
            time.sleep(0.01)
        (req,) = open_requests(pg)
        assert claims.claim(req.id)
        time.sleep(1.5)  # acting, past the frontend's 1 s (it waits up to 2 s once claimed)
        answer_request(pg, req.id, error={"code": "fallback-locked", "message": "locked",
                                          "context": {"valid_from_height": 203}, "status": 409})
        claims.release(req.id)

    t = threading.Thread(target=leader)
    t.start()
    try:
        with pytest.raises(ForwardedError) as e:
            LeaderRequests(pg, 1.0).forward("fallback", {"block_id": 1})
    finally:
        t.join(30)
        claims.close()
    assert (e.value.code, e.value.message, e.value.status, e.value.context) == (
        "fallback-locked", "locked", 409, {"valid_from_height": 203})


def _settings(url: str, tmp: Path) -> Settings:
    return Settings(data_dir=tmp, database_url=url,
                    pool={"payout_script": "0014" + "ab" * 20},
                    accounting={"scheme": "prop"}, settlement={"poll_interval_sec": 3600})


def test_forwarded_actions_answer_what_the_leaders_own_api_answers(pg: Engine, url: str,
                                                                    tmp_path: Path) -> None:
    ids = [register_miner(pg, f"m{i}", bytes.fromhex("0014") + bytes([i + 1]) * 20).id
           for i in range(3)]
    token, _ = api_store.create_token(pg, "ops", ["admin"])
    auth = {"Authorization": f"Bearer {token}"}
    settings = _settings(url, tmp_path)
    frontend = PoolService(settings, migrate=False, accounting=False)
    frontend.published = PublishedWindow(frontend.engine)
    assert frontend.ingest(make_batch([f"k{i}" for i in range(30)],
                                      miner_id=[ids[i % 3] for i in range(30)])).accepted == 30
    publisher = ForwardingPublisher(frontend, timeout=10.0)
    fe_app = create_app(frontend, publisher=publisher, rate_limit=None,
                        actions=ForwardedSettlementActions(publisher.requests))

    async def main() -> list[tuple[Any, ...]]:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelNode(chain)
            lock = notify.connect_raw(url)
            epoch = try_acquire(lock, "t")
            assert epoch is not None

            async def stale() -> None:
                raise AssertionError("not stale")

            work = LeaderWork(settings, url, epoch, node, on_stale=stale)
            await work.start()
            try:
                first = frontend.latest_distribution()
                assert first is not None
                did = first.distribution.distribution_id
                h = bytes(range(32))
                assert queue_found_block(frontend.engine, h,
                                         found_payload(h, 102, did, 5_000_000_000, None))
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    if not pending_found_blocks(pg):
                        break
                ((block_id,),) = _rows(pg, "SELECT id FROM blocks")
                leader_app = work.pool.app  # the single process's routes and runner
                seen: list[tuple[Any, ...]] = []
                with TestClient(fe_app) as fe, TestClient(leader_app) as ld:
                    for path in (f"/v1/settlements/{block_id}/broadcast",
                                 f"/v1/settlements/{block_id}/fallback",
                                 "/v1/settlements/77/broadcast"):
                        r_fe = await asyncio.to_thread(fe.post, path, headers=auth)
                        r_ld = await asyncio.to_thread(ld.post, path, headers=auth)
                        seen.append((path, (r_fe.status_code, r_fe.json()),
                                     (r_ld.status_code, r_ld.json())))
                # The operator page's button runs the same forwarded action.
                with TestClient(fe_app, base_url="https://pool.example") as page:
                    await asyncio.to_thread(page.post, "/operator/login",
                                            data={"token": token})
                    r = await asyncio.to_thread(
                        page.post, f"/operator/settlements/{block_id}/broadcast",
                        data={"csrf": csrf_token(token)}, follow_redirects=False)
                    seen.append(("button", r.status_code, unquote(r.headers["location"])))
                return seen
            finally:
                await work.stop()
                lock.close()

    try:
        seen = asyncio.run(main())
    finally:
        frontend.engine.dispose()
    (bc, fb, unknown, button) = seen
    assert button[:2] == ("button", 303)
    assert "broadcast refused: " in button[2] and "(nothing-to-broadcast)" in button[2]
    # Coinbase mode: nothing to broadcast, a 409 decided by the leader's runner, carried
    # over with its status, code, message and instance unchanged.
    assert bc[1] == bc[2] and bc[1][0] == 409 and bc[1][1]["code"] == "nothing-to-broadcast"
    assert fb[1] == fb[2] and fb[1][0] == 409
    # An unknown block is the frontend's own 404 (the block table is in the store).
    assert unknown[1] == unknown[2] and unknown[1][0] == 404
    # Two forwarded actions, answered; the 404 never reached the leader.
    rows = _rows(pg, "SELECT kind, answered_at IS NOT NULL FROM leader_requests "
                 "WHERE kind <> 'publish' ORDER BY id")
    assert [tuple(r) for r in rows] == [("broadcast", True), ("fallback", True),
                                        ("broadcast", True)]
