"""The Mining Protocol server over TCP + Noise beside a JD server, with the JD client library
on both connections: declare, open an extended channel, SetCustomMiningJob, CPU-mine shares,
SubmitShares.Success only after the batch was handed to ``on_shares``; a share meeting regtest's
nBits becomes a block the kernel accepts, reported once; shares on the old tip are then stale.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence

from payouts.node.kernel_chain import KernelChain
from sv2.declared_job import FoundBlock
from sv2.jdc import JobTemplate
from sv2.jdc.pool_channel import PoolChannel
from sv2.messages.base import Message
from sv2.messages.common import SetupConnection, SetupConnectionSuccess
from sv2.messages.mining import (
    MINING_FLAG_REQUIRES_STANDARD_JOBS,
    MiningSetNewPrevHash,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
)
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
from tests.jds.helpers import IDENTITY as JDS_TEST_IDENTITY
from tests.jds.helpers import JdClient
from tests.mining.helpers import sha256d

MAX = ((1 << 256) - 1).to_bytes(32, "little")


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
                identity=IDENTITY, node=node, jds=jds,  # type: ignore[arg-type]
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


def _header(version: int, prev: bytes, root: bytes, ntime: int, bits: int, nonce: int) -> bytes:
    return struct.pack("<I32s32sIII", version, prev, root, ntime, bits, nonce)


async def _collect(c: JdClient, *kinds: type[Message]) -> dict[type[Message], Message]:
    """Read until one message of each kind arrived (acks come after the batch is stored, so
    they may follow the next job)."""
    got: dict[type[Message], Message] = {}
    while len(got) < len(kinds):
        msg = await c.recv()
        assert type(msg) in kinds and type(msg) not in got, msg
        got[type(msg)] = msg
    return got


def _grind(make: Callable[[int], bytes], target: int) -> tuple[int, bytes]:
    for nonce in range(1 << 20):
        h = sha256d(make(nonce))
        if int.from_bytes(h, "little") <= target:
            return nonce, h
    raise AssertionError("no share found")


def test_pool_jobs_for_miners_that_do_not_declare() -> None:
    """Standard and extended channels get the pool's job on its template (NewMiningJob /
    NewExtendedMiningJob, then SetNewPrevHash), mined from the messages alone; the share is a
    block whose coinbase pays the distribution; the next job follows on the new tip."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = ChainNode(chain)
            dist = make_distribution(1)
            jds = await start_server(node, dist)
            recorded: list[AcceptedShare] = []

            async def on_shares(batch: Sequence[AcceptedShare]) -> None:
                recorded.extend(batch)

            mp = MiningServer(
                identity=JDS_TEST_IDENTITY, node=node, jds=jds,  # type: ignore[arg-type]
                policy=MiningPolicy(difficulty_unit=REGTEST_POW_LIMIT, initial_difficulty=2),
                known_user=lambda u: u == "miner-1", on_shares=on_shares,
                flush_interval=0.05, tip_interval=0.05)
            await mp.start()
            try:
                std = await JdClient.connect(mp.address)
                std.send(SetupConnection(0, 2, 2, MINING_FLAG_REQUIRES_STANDARD_JOBS, "", 0,
                                         "t", "", "", ""))
                await std.expect(SetupConnectionSuccess)
                std.send(OpenStandardMiningChannel(1, "miner-1", 0.0, MAX, ))
                ok = await std.expect(OpenStandardMiningChannelSuccess)
                job = await std.expect(NewMiningJob)
                prev = await std.expect(MiningSetNewPrevHash)
                assert job.min_ntime is None and prev.job_id == job.job_id
                target = int.from_bytes(ok.target, "little")
                nonce, h = _grind(lambda n: _header(job.version, prev.prev_hash,
                                                    job.merkle_root, prev.min_ntime,
                                                    prev.nbits, n), target)
                std.send(SubmitSharesStandard(ok.channel_id, 1, job.job_id, nonce,
                                              prev.min_ntime, job.version))
                got = await _collect(std, SubmitSharesSuccess, NewMiningJob, MiningSetNewPrevHash)
                ack = got[SubmitSharesSuccess]
                assert isinstance(ack, SubmitSharesSuccess)
                assert (ack.new_submits_accepted_count, ack.new_shares_sum) == (1, 2)
                # A block: the kernel took it, its coinbase pays the distribution's payees.
                assert chain.tip_hash == h
                coinbase = mp.found_blocks[0].coinbase
                paid = {o.script for o in coinbase.outputs}
                assert {p.script for p in dist.payouts} <= paid
                # The next job, on the new tip, follows unasked.
                job2, prev2 = got[NewMiningJob], got[MiningSetNewPrevHash]
                assert isinstance(job2, NewMiningJob)
                assert isinstance(prev2, MiningSetNewPrevHash)
                assert prev2.prev_hash == h and job2.job_id != job.job_id
                # A share on the old job is stale now.
                std.send(SubmitSharesStandard(ok.channel_id, 2, job.job_id, nonce,
                                              prev.min_ntime, job.version))
                assert (await std.expect(SubmitSharesError)).error_code == E.STALE_SHARE

                ext = await JdClient.connect(mp.address)
                ext.send(SetupConnection(0, 2, 2, 0, "", 0, "t", "", "", ""))
                await ext.expect(SetupConnectionSuccess)
                ext.send(OpenExtendedMiningChannel(1, "miner-1", 0.0, MAX, 4))
                eok = await ext.expect(OpenExtendedMiningChannelSuccess)
                ejob = await ext.expect(NewExtendedMiningJob)
                eprev = await ext.expect(MiningSetNewPrevHash)
                en = b"\x00\x00\x00\x07"
                root = sha256d(ejob.coinbase_tx_prefix + eok.extranonce_prefix + en
                               + ejob.coinbase_tx_suffix)
                for sib in ejob.merkle_path:
                    root = sha256d(root + sib)
                etarget = int.from_bytes(eok.target, "little")
                enonce, eh = _grind(lambda n: _header(ejob.version, eprev.prev_hash, root,
                                                      eprev.min_ntime, eprev.nbits, n), etarget)
                ext.send(SubmitSharesExtended(eok.channel_id, 1, ejob.job_id, enonce,
                                              eprev.min_ntime, ejob.version, en))
                got = await _collect(ext, SubmitSharesSuccess, NewExtendedMiningJob,
                                     MiningSetNewPrevHash)
                eack = got[SubmitSharesSuccess]
                assert isinstance(eack, SubmitSharesSuccess)
                assert eack.new_submits_accepted_count == 1
                assert chain.tip_hash == eh
                assert [r.account for r in recorded] == ["miner-1", "miner-1"]
                assert recorded[0].revenue == mp.found_blocks[0].revenue
            finally:
                await mp.stop()
                await jds.stop()

    asyncio.run(main())
