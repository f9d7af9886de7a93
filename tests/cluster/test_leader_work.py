"""The leader's work in-process on PostgreSQL with a kernel node (payouts.leader): it follows
the shares frontends store, publishes the window view, records each queued found block once
(a second leader after a crash between recording and marking records nothing twice) and
announces the settlement distribution as ``id:settled``; a frontend's forwarded publication is
answered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from payouts.cluster_frontend import DistributionFollower, ForwardingPublisher
from payouts.leader import LeaderWork, found_payload
from payouts.node.kernel import KernelNode
from payouts.node.kernel_chain import KernelChain
from payouts.published_view import PublishedWindow
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.store import migrate, notify
from payouts.store.cluster import pending_found_blocks, queue_found_block
from payouts.store.engine import make_engine
from payouts.store.leader_lease import try_acquire
from payouts.store.repositories import register_miner
from tests.jds.helpers import setup_chain
from tests.store.conftest import make_batch

pytestmark = pytest.mark.postgres


def _settings(url: str, tmp: Path) -> Settings:
    return Settings(data_dir=tmp, database_url=url,
                    pool={"payout_script": "0014" + "ab" * 20},
                    accounting={"scheme": "prop"}, settlement={"poll_interval_sec": 3600})


def test_leader_follows_publishes_records_once_and_answers(postgres: Any, tmp_path: Path
                                                          ) -> None:
    url = postgres.new_url()
    eng = make_engine(url)
    migrate.upgrade(eng)
    ids = [register_miner(eng, f"m{i}", bytes.fromhex("0014") + bytes([i + 1]) * 20).id
           for i in range(3)]
    settings = _settings(url, tmp_path)
    frontend = PoolService(settings, migrate=False, accounting=False)
    frontend.published = PublishedWindow(frontend.engine)
    # Shares stored by a frontend before any leader exists.
    assert frontend.ingest(make_batch([f"k{i}" for i in range(30)],
                                      miner_id=[ids[i % 3] for i in range(30)])).accepted == 30
    pushed: list[tuple[int, bool]] = []

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelNode(chain)
            lock = notify.connect_raw(url)
            epoch = try_acquire(lock, "t")
            assert epoch == 1

            async def stale() -> None:
                raise AssertionError("not stale")

            work = LeaderWork(settings, url, epoch, node, on_stale=stale)
            await work.start()
            try:
                assert work.service.accountant.share_count == 30
                first = frontend.latest_distribution()
                assert first is not None  # published on election (none existed)
                follower = DistributionFollower(
                    frontend, first.distribution.distribution_id,
                    lambda f, s: pushed.append((f.distribution.distribution_id, s)))
                follower.start()
                frontend.ingest(make_batch([f"k{i}" for i in range(30, 40)], miner_id=ids[0]))
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    try:
                        if frontend.window_view().share_count == 40:
                            break
                    except Exception:
                        pass
                assert frontend.window_view().share_count == 40
                # A forwarded publication (the route runs it in a worker thread).
                fwd = ForwardingPublisher(frontend, timeout=10.0)
                fitted = await asyncio.to_thread(fwd.publish_distribution, 5_000_000_000)
                did = fitted.distribution.distribution_id
                assert did == first.distribution.distribution_id + 1
                # A found block, queued twice (two paths report it).
                h = bytes(range(32))
                payload = found_payload(h, 102, did, 5_000_000_000, None)
                assert queue_found_block(frontend.engine, h, payload)
                assert not queue_found_block(frontend.engine, h, payload)
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    if not pending_found_blocks(eng) and len(pushed) >= 2:
                        break
                await follower.stop()
            finally:
                await work.stop()
            # Crash between recording and marking: the next leader finds it recorded.
            with eng.begin() as conn:
                conn.execute(text("UPDATE found_blocks SET recorded_at = NULL"))
            lock.close()
            lock2 = notify.connect_raw(url)
            epoch2 = try_acquire(lock2, "t2")
            assert epoch2 == 2
            work2 = LeaderWork(settings, url, epoch2, node, on_stale=stale)
            await work2.start()
            try:
                for _ in range(100):
                    await asyncio.sleep(0.05)
                    if not pending_found_blocks(eng):
                        break
                assert work2.service.accountant.share_count == 0  # PROP: round closed once
            finally:
                await work2.stop()
                lock2.close()

    asyncio.run(main())
    with eng.connect() as conn:
        blocks = conn.execute(text("SELECT COUNT(*), MIN(distribution_id) FROM blocks")).one()
        lines = conn.execute(text(
            "SELECT COUNT(*), COUNT(DISTINCT (miner_id, reason, amount)) FROM ledger_entries")
        ).one()
        rounds = conn.execute(text(
            "SELECT COUNT(*) FROM accounting_events WHERE kind = 'round'")).scalar_one()
    assert blocks[0] == 1 and rounds == 1
    assert lines[0] == lines[1]  # no ledger line written twice
    assert pending_found_blocks(eng) == []
    # The frontend pushed the forwarded publication, then the settlement one as settled.
    assert [s for _d, s in pushed] == [False, True]
    assert pushed[1][0] == pushed[0][0] + 1
    frontend.engine.dispose()
    eng.dispose()
