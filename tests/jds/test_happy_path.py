"""End to end over TCP + Noise on loopback: setup, 0x0001 negotiation, SetPayoutDistribution
(+ 0x4003 SetSettlementMode), token, a coinbase built with build_coinbase_settlement, declare,
missing-transaction round trip, PushSolution -> the kernel accepts the block and the tip moves."""

from __future__ import annotations

import asyncio

from payouts.node.kernel_chain import KernelChain
from sv2.domain_messages import distribution_from_message, mode_from_message
from sv2.jds import FoundBlock
from sv2.messages import (
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    SetPayoutDistribution,
    SetSettlementMode,
)
from sv2.version_bits import BIP323_GENERAL_PURPOSE_BITS
from tests.jds.helpers import (
    POOL_SCRIPT,
    JdClient,
    KernelTestNode,
    build_declaration,
    fee_tx,
    make_distribution,
    setup_chain,
    solve_push,
    start_server,
    wait_until,
)


def test_happy_path_block_accepted_by_kernel() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            known, hidden = fee_tx(chain, 1, 1_500), fee_tx(chain, 2, 2_500)
            node.add_mempool(known)
            found: list[FoundBlock] = []
            dist = make_distribution(1, payees=6)
            srv = await start_server(node, dist, on_block=found.append)
            c = await JdClient.connect(srv.address)
            try:
                await c.setup()
                spd = await c.expect(SetPayoutDistribution)  # first message after negotiation
                ssm = await c.expect(SetSettlementMode)
                assert mode_from_message(ssm).name == "coinbase"
                assert ssm.distribution_id == spd.distribution_id == 1
                got = distribution_from_message(spd)
                assert got == dist
                tok = await c.token()
                assert tok.coinbase_tx_outputs == b"\x00"  # PR #203: no pool-imposed outputs
                # The JDC builds the coinbase from the distribution it received.
                decl = build_declaration(got, chain, [known, hidden], fees=1_500 + 2_500)
                c.send(decl.message(tok.mining_job_token))
                pmt = await c.expect(ProvideMissingTransactions)
                assert pmt.request_id == 7 and pmt.unknown_tx_position_list == (1,)
                c.send(ProvideMissingTransactionsSuccess(7, (hidden.serialize(),)))
                ok = await c.expect(DeclareMiningJobSuccess)
                assert ok.request_id == 7 and len(ok.new_mining_job_token) == 16
                # The supplied tx is committed to the store once validation passed (SRI v32x).
                assert srv.txs.get(hidden.wtxid) is not None
                job = srv.declared_job(ok.new_mining_job_token)
                assert job is not None and job.revenue == decl.revenue
                assert job.payout_outputs[0].script == POOL_SCRIPT
                # PushSolution -> the server rebuilds, checks PoW and submits to the kernel.
                tip_before = chain.tip_hash
                tip = await node.tip()
                c.send(solve_push(decl, tip.block_hash, tip.time + 1))
                for _ in range(100):
                    if found:
                        break
                    await asyncio.sleep(0.02)
                assert found, srv.stats
                fb = found[0]
                assert chain.tip_hash == fb.block_hash != tip_before
                assert chain.tip_height == decl.height == fb.height
                assert fb.distribution_id == 1 and fb.revenue == decl.revenue
                assert fb.coinbase.outputs == decl.outputs
                assert len(chain.blocks[-1].txs) == 3
            finally:
                c.close()
                await srv.stop()

    asyncio.run(main())


def test_publish_pushes_to_negotiated_clients_only() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            srv = await start_server(KernelTestNode(chain))
            a = await JdClient.connect(srv.address)
            b = await JdClient.connect(srv.address)
            try:
                await a.setup()
                await a.expect(SetPayoutDistribution)
                await a.expect(SetSettlementMode)
                await b.setup(extensions=())  # negotiates nothing
                srv.publish(make_distribution(2, payees=3))
                spd = await a.expect(SetPayoutDistribution)
                assert spd.distribution_id == 2 and len(spd.payouts) == 3
                assert (await a.expect(SetSettlementMode)).distribution_id == 2
                tok = await b.token()  # b got nothing pushed: its next message is the reply
                assert tok.coinbase_tx_outputs[0] == 1  # base spec: one pool output, value 0
                assert tok.coinbase_tx_outputs[1:9] == bytes(8)
            finally:
                a.close()
                b.close()
                await srv.stop()

    asyncio.run(main())


def test_push_solution_version_outside_bip323_bits_is_not_submitted() -> None:
    """PushSolution.version may differ from DeclareMiningJob.version in the BIP323
    general-purpose bits only (sv2-spec §5.3.18, as SetCustomMiningJob): a flipped BIP9 signal
    bit or other top bits are counted and logged, nothing reaches the node; a version rolled
    over every general-purpose bit gives a block the kernel accepts."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            found: list[FoundBlock] = []
            srv = await start_server(node, make_distribution(1), on_block=found.append)
            c = await JdClient.connect(srv.address)
            try:
                await c.setup()
                d = distribution_from_message(await c.expect(SetPayoutDistribution))
                await c.expect(SetSettlementMode)
                tok = await c.token()
                decl = build_declaration(d, chain)
                c.send(decl.message(tok.mining_job_token))  # declares version 0x20000000
                ok = await c.expect(DeclareMiningJobSuccess)
                job = srv.declared_job(ok.new_mining_job_token)
                assert job is not None and job.version == 0x20000000
                tip = await node.tip()
                bad_versions = (0x20000001, 0x20000010, 0x40000000, 0x60000000)
                for n, version in enumerate(bad_versions, 1):
                    c.send(solve_push(decl, tip.block_hash, tip.time + 1, version=version))
                    await wait_until(lambda n=n: srv.stats.get("solution-bad-version") == n)
                assert node.submitted == [] and not found and chain.tip_hash == tip.block_hash
                rolled = 0x20000000 | BIP323_GENERAL_PURPOSE_BITS
                c.send(solve_push(decl, tip.block_hash, tip.time + 1, version=rolled))
                await wait_until(lambda: bool(found))
                assert chain.tip_hash == found[0].block_hash
                assert chain.blocks[-1].header.version == rolled
                assert srv.stats["solution-bad-version"] == len(bad_versions)
            finally:
                c.close()
                await srv.stop()

    asyncio.run(main())
