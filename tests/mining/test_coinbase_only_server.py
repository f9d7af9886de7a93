"""Coinbase-only jobs (sv2-spec §6.1) through the Mining Protocol server over TCP + Noise, with
transactions: a job on the pool's own transactions is rebuilt and submitted by the pool; a job
on transactions the pool does not hold cannot be rebuilt, so the JD client propagates its block
and the pool records it once the node's chain has it. Shares on a job claiming fees the pool's
template does not have are credited at the pool template's T. The JD server refuses a
Coinbase-only connection unless it is built for one, and a Coinbase-only token cannot declare."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from payouts.node.kernel_chain import KernelChain
from sv2.block_rebuild import assemble_block
from sv2.declared_job import FoundBlock
from sv2.jdc import DeclarationRejected, JobTemplate
from sv2.jdc.errors import SetupRejected
from sv2.jdc.pool_channel import PoolChannel
from sv2.mining.events import AcceptedShare
from sv2.mining.server import MiningServer
from sv2.mining.shared import MiningPolicy
from sv2.mining.targets import REGTEST_POW_LIMIT
from tests.jdc.helpers import (
    AUTHORITY_PK,
    IDENTITY,
    ChainNode,
    fee_tx,
    make_distribution,
    setup_chain,
    start_server,
)
from tests.jdc.test_client_e2e import client_for


class _Node(ChainNode):  # type: ignore[misc]
    """The test node, with the two block look-ups the Mining server's block watch needs."""

    async def block_hash(self, height: int) -> bytes | None:
        blocks = self.chain.blocks
        return blocks[height - 1].hash if 0 < height <= len(blocks) else None

    async def get_block(self, block_hash: bytes) -> bytes | None:
        return next((b.serialize() for b in self.chain.blocks if b.hash == block_hash), None)


def test_coinbase_only_blocks_with_and_without_the_pools_transactions() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            pool_node, miner_node = _Node(chain), _Node(chain)
            tx1 = fee_tx(chain, 1, 1_500)
            pool_node.add_mempool(tx1)
            miner_node.add_mempool(tx1)
            jds = await start_server(pool_node, make_distribution(1), coinbase_only=True)
            recorded: list[AcceptedShare] = []
            blocks: list[FoundBlock] = []

            async def on_shares(batch: Sequence[AcceptedShare]) -> None:
                recorded.extend(batch)

            mp = MiningServer(
                identity=IDENTITY, node=pool_node, jds=jds,
                policy=MiningPolicy(difficulty_unit=REGTEST_POW_LIMIT, initial_difficulty=2),
                known_user=lambda u: u == "miner-1", on_shares=on_shares,
                on_block=blocks.append, flush_interval=0.05, tip_interval=0.05,
                watch_interval=0.05)
            await mp.start()
            try:
                host, port = mp.address
                async with PoolChannel(host, port, AUTHORITY_PK, user_identity="miner-1",
                                       timeout=5.0) as pool, \
                        client_for(jds, user_identifier="miner-1", coinbase_only=True,
                                   extranonce_size=pool.full_extranonce_size) as c:
                    # 1. The same transactions as the pool's template: the pool rebuilds the
                    # block of a share and submits it itself.
                    t1 = JobTemplate.from_block_template(await miner_node.block_template())
                    assert len(t1.transactions) == 1
                    job = await c.coinbase_only_job(t1)
                    jid = await pool.set_custom_job(job, coinbase_only=True)
                    assert await pool.mine(job, jid, shares=1) == 1
                    await pool.wait_answers(1)
                    assert pool.channel.accepted == 1, pool.channel.errors
                    assert recorded[0].revenue == t1.revenue  # the pool's T too
                    assert [b.block_hash for b in blocks] == [recorded[0].share_hash]
                    assert chain.tip_hash == recorded[0].share_hash
                    assert blocks[0].distribution_id == 1 and blocks[0].revenue == t1.revenue
                    # 2. A transaction only the miner's node has: 2,000 sat of fees the pool
                    # cannot see. Accepted (the payouts are exact for the T claimed), credited
                    # at the pool's own template's T on that tip, and its block, which the pool
                    # cannot rebuild, is recorded once the miner's node propagated it.
                    for _ in range(100):  # the pool's job on the new tip
                        if mp.shared.pool_job and mp.shared.pool_job.prev_hash == chain.tip_hash:
                            break
                        await asyncio.sleep(0.02)
                    pool_t = mp.shared.pool_job.revenue if mp.shared.pool_job else 0
                    miner_node.mempool.pop(tx1.wtxid)  # mined (the pool's node submitted it)
                    tx2 = fee_tx(chain, 2, 2_000)
                    miner_node.add_mempool(tx2)
                    t2 = JobTemplate.from_block_template(await miner_node.block_template())
                    assert t2.revenue == pool_t + 2_000 and len(t2.transactions) == 1
                    job2 = await c.coinbase_only_job(t2)
                    jid2 = await pool.set_custom_job(job2, coinbase_only=True)
                    assert await pool.mine(job2, jid2, shares=1) == 1
                    await pool.wait_answers(2)
                    assert pool.channel.accepted == 2, pool.channel.errors
                    assert recorded[1].revenue == pool_t  # not t2.revenue
                    await asyncio.sleep(0.2)
                    assert len(blocks) == 1  # not rebuilt, not submitted by the pool
                    s = pool.submitted[-1]
                    raw_cb = job2.coinbase.parts.serialize(s.extranonce)
                    block = assemble_block(raw_cb, t2.txids, t2.transactions, version=s.version,
                                           prev_hash=t2.prev_hash, ntime=s.ntime, bits=t2.bits,
                                           nonce=s.nonce)
                    assert block.block_hash == s.block_hash
                    assert await miner_node.submit_block(block.serialize()) is None
                    for _ in range(100):
                        if len(blocks) == 2:
                            break
                        await asyncio.sleep(0.05)
                    assert [b.block_hash for b in blocks][1:] == [s.block_hash]
                    found = blocks[1]
                    assert found.height == t2.height and found.revenue == t2.revenue
                    assert found.coinbase.txid == block.coinbase.txid
                    assert mp.stats["blocks-watched"] == 1
                    # A Coinbase-only token is no DeclareMiningJob token (Full-Template only).
                    try:
                        await c.declare_job(t2)
                        raise AssertionError("a Coinbase-only connection declared a job")
                    except DeclarationRejected as exc:
                        assert exc.event.code == "invalid-mining-job-token"
            finally:
                await mp.stop()
                await jds.stop()

    asyncio.run(main())


def test_coinbase_only_connection_refused_without_a_pool_to_check_it() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            jds = await start_server(ChainNode(chain), make_distribution(1))
            try:
                try:
                    async with client_for(jds, coinbase_only=True):
                        raise AssertionError("a Coinbase-only connection was accepted")
                except SetupRejected as exc:
                    assert "missing-declare-tx-data-flag" in str(exc) or (
                        exc.code == "missing-declare-tx-data-flag")
            finally:
                await jds.stop()

    asyncio.run(main())
