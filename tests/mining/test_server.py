"""The Mining Protocol server over TCP + Noise beside a JD server, with the JD client library
on both connections: declare, open an extended channel, SetCustomMiningJob, CPU-mine shares,
SubmitShares.Success only after the batch was handed to ``on_shares``; a share meeting regtest's
nBits becomes a block the kernel accepts, reported once; shares on the old tip are then stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from payouts.node.kernel_chain import KernelChain
from sv2.declared_job import FoundBlock
from sv2.jdc import JobTemplate
from sv2.jdc.pool_channel import PoolChannel
from sv2.messages.mining import SubmitSharesExtended
from sv2.mining import errors as E
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


def test_declared_job_mined_through_the_mining_protocol() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = ChainNode(chain)
            tx = fee_tx(chain, 1, 1_500)
            node.add_mempool(tx)
            jds = await start_server(node, make_distribution(1))
            recorded: list[Sequence[AcceptedShare]] = []
            blocks: list[FoundBlock] = []

            async def on_shares(batch: Sequence[AcceptedShare]) -> None:
                await asyncio.sleep(0.05)  # a slow store: acks must wait for it
                recorded.append(list(batch))

            mp = MiningServer(
                identity=IDENTITY, node=node, jds=jds,
                policy=MiningPolicy(difficulty_unit=REGTEST_POW_LIMIT, initial_difficulty=2),
                known_user=lambda u: u == "miner-1", on_shares=on_shares,
                on_block=blocks.append, flush_interval=0.05, tip_interval=0.05)
            await mp.start()
            try:
                host, port = mp.address
                async with PoolChannel(host, port, AUTHORITY_PK, user_identity="miner-1",
                                       timeout=5.0) as pool:
                    assert pool.negotiated == {0x0003}
                    assert pool.full_extranonce_size == 8
                    async with client_for(jds, user_identifier="miner-1",
                                          extranonce_size=pool.full_extranonce_size) as c:
                        template = JobTemplate.from_block_template(await node.block_template())
                        job = await c.declare_job(template)
                        job_id = await pool.set_custom_job(job)
                        assert mp.channels == 1
                        assert await pool.mine(job, job_id, shares=1) == 1
                        await pool.wait_answers(1)
                        assert pool.channel.accepted == 1 and pool.channel.errors == {}
                        assert pool.channel.accepted_difficulty == 2
                        assert len(recorded) == 1 and len(recorded[0]) == 1
                        share = recorded[0][0]
                        assert share.account == "miner-1" and share.difficulty == 2
                        assert share.revenue == template.revenue
                        # On regtest the share meets nBits: a block the kernel accepted.
                        assert len(blocks) == 1
                        assert blocks[0].block_hash == share.share_hash
                        assert chain.tip_hash == share.share_hash
                        assert blocks[0].distribution_id == 1
                        # Further shares on that job build on the old tip: stale.
                        await pool.mine(job, job_id, shares=1)
                        await pool.wait_answers(2)
                        assert list(pool.channel.errors.values()) == [E.STALE_SHARE]
                        # Another connection's channel id and job: unknown on this one.
                        pool._send(SubmitSharesExtended(77, 99, job_id, 0, template.time,
                                                        template.version, bytes(4)))
                        await pool.wait_answers(3)
                        assert pool.channel.errors[99] == E.INVALID_CHANNEL_ID
                assert len(blocks) == 1 and sum(map(len, recorded)) == 1
            finally:
                await mp.stop()
                await jds.stop()

    asyncio.run(main())
