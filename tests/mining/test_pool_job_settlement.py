"""The pool's job after a settlement (sv2-spec PR #203 §10): once the composition root says a
found block paid the current distribution (``MiningServer.distribution_paid``), no pool job is
built on it again, even on the new tip; the next job comes with the next distribution
(``pool_job_soon``), and its block pays that one."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence

from payouts.node.kernel_chain import KernelChain
from sv2.declared_job import FoundBlock
from sv2.messages.common import SetupConnection, SetupConnectionSuccess
from sv2.messages.mining import (
    MiningSetNewPrevHash,
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    SubmitSharesExtended,
    SubmitSharesSuccess,
)
from sv2.mining.events import AcceptedShare
from sv2.mining.server import MiningServer
from sv2.mining.shared import MiningPolicy
from sv2.mining.targets import REGTEST_POW_LIMIT
from tests.jdc.helpers import ChainNode, make_distribution, setup_chain, start_server
from tests.jds.helpers import IDENTITY, JdClient
from tests.mining.helpers import sha256d

MAX = ((1 << 256) - 1).to_bytes(32, "little")
EN = b"\x00\x00\x00\x07"


def _mine(job: NewExtendedMiningJob, prev: MiningSetNewPrevHash,
          ok: OpenExtendedMiningChannelSuccess, seq: int) -> SubmitSharesExtended:
    root = sha256d(job.coinbase_tx_prefix + bytes(ok.extranonce_prefix) + EN
                   + job.coinbase_tx_suffix)
    for sib in job.merkle_path:
        root = sha256d(root + sib)
    target = int.from_bytes(ok.target, "little")
    for nonce in range(1 << 20):
        header = struct.pack("<I32s32sIII", job.version, prev.prev_hash, root, prev.min_ntime,
                             prev.nbits, nonce)
        if int.from_bytes(sha256d(header), "little") <= target:
            return SubmitSharesExtended(ok.channel_id, seq, job.job_id, nonce, prev.min_ntime,
                                        job.version, EN)
    raise AssertionError("no share found")


def test_no_pool_job_on_a_paid_distribution() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = ChainNode(chain)
            jds = await start_server(node, make_distribution(1))
            blocks: list[FoundBlock] = []

            async def on_shares(batch: Sequence[AcceptedShare]) -> None:
                return None

            async def on_block(found: FoundBlock) -> None:
                # What payouts.served.start_mining does before recording the block.
                assert found.distribution_id is not None
                mp.distribution_paid(found.distribution_id)
                blocks.append(found)

            mp = MiningServer(
                identity=IDENTITY, node=node, jds=jds,  # type: ignore[arg-type]
                policy=MiningPolicy(difficulty_unit=REGTEST_POW_LIMIT),
                known_user=lambda u: u == "miner-1", on_shares=on_shares, on_block=on_block,
                flush_interval=0.05, tip_interval=0.05, template_interval=0.05)
            await mp.start()
            try:
                c = await JdClient.connect(mp.address)
                c.send(SetupConnection(0, 2, 2, 0, "", 0, "t", "", "", ""))
                await c.expect(SetupConnectionSuccess)
                c.send(OpenExtendedMiningChannel(1, "miner-1", 0.0, MAX, 4))
                ok = await c.expect(OpenExtendedMiningChannelSuccess)
                job = await c.expect(NewExtendedMiningJob)
                prev = await c.expect(MiningSetNewPrevHash)
                c.send(_mine(job, prev, ok, 1))
                assert isinstance(await c.recv(), SubmitSharesSuccess)
                assert len(blocks) == 1 and blocks[0].distribution_id == 1
                # The tip moved and the template is polled every 0.05 s, but distribution 1 is
                # paid: no job on the new tip until the next distribution.
                try:
                    msg = await c.recv(timeout=1.0)
                except TimeoutError:
                    msg = None
                assert msg is None, msg
                assert mp.stats.get("pool-jobs") == 1
                jds.publish(make_distribution(2), settlement=True)
                mp.pool_job_soon()
                job2 = await c.expect(NewExtendedMiningJob)
                prev2 = await c.expect(MiningSetNewPrevHash)
                assert prev2.prev_hash == blocks[0].block_hash
                c.send(_mine(job2, prev2, ok, 2))
                assert isinstance(await c.recv(), SubmitSharesSuccess)
                assert [b.distribution_id for b in blocks] == [1, 2]
                assert chain.tip_hash == blocks[1].block_hash
                c.writer.close()
            finally:
                await mp.stop()
                await jds.stop()

    asyncio.run(main())
