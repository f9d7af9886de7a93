"""JDC <-> TP <-> kernel node and JDC <-> JDS together, over real loopback TCP with Noise on
both connections: the JD client takes its template from the Template Provider, declares it to
the JDS (answering ProvideMissingTransactions with the TP's transaction data), solves it, and
the kernel accepts the block -- through the JDS's PushSolution and the TP's SubmitSolution
alike (both rebuild the same bytes)."""

from __future__ import annotations

import asyncio

import pytest

from payouts.distribution.amounts import compute_outputs
from payouts.node.kernel_chain import KernelChain
from payouts.tx.block import Block
from sv2.jdc import (
    DeclarationRejected,
    JobDeclarationClient,
    JobTemplate,
    OutputConstraints,
    constraints_for,
    solve,
)
from sv2.jds import JobDeclarationServer
from sv2.tdp import TemplateDistributionClient, TemplateProvider
from tests.jdc.helpers import (
    AUTHORITY_PK,
    ChainNode,
    big_witness_txs,
    fee_tx,
    make_distribution,
    setup_chain,
    start_server,
)
from tests.tdp.helpers import TP_PK, running_tp


async def _until(cond: object, what: str, timeout: float = 5.0) -> None:
    assert callable(cond)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _tdp(tp: TemplateProvider, jdc: JobDeclarationClient) -> TemplateDistributionClient:
    host, port = tp.address
    # PR #203: the constraints come from the pool's distribution, so the JDC connects first.
    return TemplateDistributionClient(
        host, port, TP_PK, constraints=jdc.constraints_message(), timeout=5.0
    )


def test_jdc_declares_tp_template_and_block_is_accepted() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            tp_node, jds_node = ChainNode(chain), ChainNode(chain)
            known, hidden = fee_tx(chain, 1, 1_500), fee_tx(chain, 2, 2_500)
            for n in (tp_node, jds_node):
                n.add_mempool(known)
            tp_node.add_mempool(hidden)  # only the miner's node has it: the JDS will ask
            dist = make_distribution(1, payees=6)
            jds: JobDeclarationServer = await start_server(jds_node, dist)
            try:
                async with (
                    running_tp(tp_node) as tp,
                    JobDeclarationClient(*jds.address, AUTHORITY_PK, timeout=5.0) as jdc,
                    _tdp(tp, jdc) as tdp,
                ):
                    template = await tdp.template()
                    # The TP got exactly what the distribution implies.
                    [session] = tp._peers.values()
                    assert session.constraints == constraints_for(dist).message()
                    assert template.template_id is not None
                    assert template.wtxids == (known.wtxid, hidden.wtxid)
                    assert template.revenue == chain.subsidy(102) + 4_000
                    job = await jdc.declare_job(template)
                    assert jdc.stats["missing-txs-requests"] == 1
                    assert job.payout_outputs == compute_outputs(dist, template.revenue).outputs
                    sol = solve(template, job.coinbase)
                    jdc.push_solution(job, sol)
                    await jdc.drain()
                    await _until(lambda: jds.found_blocks, "the JDS to accept the block")
                    await tdp.submit_solution(template, sol)
                    await _until(lambda: tp.solutions, "the TP to take the SubmitSolution")
            finally:
                await jds.stop()
            [found] = jds.found_blocks
            [submitted] = tp.solutions
            assert chain.tip_hash == sol.block_hash == found.block_hash
            # The TP rebuilt the block byte for byte too; the kernel's tip already is that
            # block, so the second submission changes nothing and is not an error.
            assert submitted.raw_block == found.raw_block == sol.block.serialize()
            assert submitted.accepted and chain.tip_height == 102
            block = Block.parse(found.raw_block)
            assert [t.wtxid for t in block.txs[1:]] == [known.wtxid, hidden.wtxid]

    asyncio.run(main())


def test_refused_job_falls_back_to_solo_through_the_tp() -> None:
    """The JDS refuses (its node is one block ahead: stale-chain-tip); the miner mines its TP
    template solo and the TP's node accepts it."""

    async def main() -> None:
        with KernelChain() as pool_chain, KernelChain() as miner_chain:
            pool_chain.mine_empty(1, b"\x51")
            jds = await start_server(ChainNode(pool_chain), make_distribution(1))
            try:
                async with (
                    running_tp(ChainNode(miner_chain)) as tp,
                    JobDeclarationClient(*jds.address, AUTHORITY_PK, timeout=5.0) as jdc,
                    _tdp(tp, jdc) as tdp,
                ):
                    template = await tdp.template()
                    with pytest.raises(DeclarationRejected) as info:
                        await jdc.declare_job(template)
                    ev = info.value.event
                    assert ev.code == "stale-chain-tip" and ev.coinbase is not None
                    sol = solve(template, ev.coinbase)
                    await tdp.submit_solution(template, sol)
                    await _until(lambda: tp.solutions, "the TP to take the solo block")
            finally:
                await jds.stop()
            [s] = tp.solutions
            assert s.accepted and miner_chain.tip_hash == sol.block_hash
            assert miner_chain.tip_height == 1

    asyncio.run(main())


def test_distribution_change_resends_constraints_to_the_tp() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            d1, d2 = make_distribution(1, payees=2), make_distribution(2, payees=9)
            jds = await start_server(ChainNode(chain), d1)
            tdp_box: list[TemplateDistributionClient] = []

            def resend(c: OutputConstraints) -> None:
                if tdp_box:
                    tdp_box[0].set_constraints(c.message())

            try:
                async with (
                    running_tp(ChainNode(chain)) as tp,
                    JobDeclarationClient(
                        *jds.address, AUTHORITY_PK, timeout=5.0, on_constraints=resend
                    ) as jdc,
                    _tdp(tp, jdc) as tdp,
                ):
                    tdp_box.append(tdp)
                    t1 = await tdp.template()
                    jds.publish(d2)
                    await jdc.wait_for_distribution(after=1)
                    t2 = await tdp.template(newer_than=t1.template_id)
                    [session] = tp._peers.values()
                    assert session.constraints == constraints_for(d2).message()
                    assert (
                        constraints_for(d2).max_additional_size
                        > constraints_for(d1).max_additional_size
                    )
                    job = await jdc.declare_job(t2)
                    assert job.distribution_id == 2
                    assert isinstance(t2, JobTemplate) and t2.prev_hash == t1.prev_hash
            finally:
                await jds.stop()

    asyncio.run(main())


def test_a_4mb_block_through_the_tp_and_the_jds() -> None:
    """Frames above the 1 MiB default where a message carries a block's transactions: the
    TP sends a ~4 MB RequestTransactionData.Success over Noise (64 chunks) to the TDP client,
    the JDS (whose node has none of the transactions) gets them in one ~4 MB
    ProvideMissingTransactions.Success from the JDC, and the ~4 MB block both rebuild is
    accepted by the kernel."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            txs = big_witness_txs(chain, 19)
            tp_node, jds_node = ChainNode(chain), ChainNode(chain)
            for tx in txs:
                tp_node.add_mempool(tx)  # only the miner's node: the JDS asks for all of them
            payload = sum(len(tx.serialize()) for tx in txs)
            assert payload > 3_950_000 and sum(tx.weight for tx in txs) < 3_990_000
            jds = await start_server(jds_node, make_distribution(1, payees=4))
            try:
                async with (
                    running_tp(tp_node) as tp,
                    JobDeclarationClient(*jds.address, AUTHORITY_PK, timeout=20.0) as jdc,
                    _tdp(tp, jdc) as tdp,
                ):
                    tdp.timeout = 20.0
                    template = await tdp.template()
                    assert template.wtxids == tuple(tx.wtxid for tx in txs)
                    # SetupConnection.Success, NewTemplate, SetNewPrevHash, and one
                    # RequestTransactionData.Success carrying every byte of them.
                    assert tdp._conn is not None and tdp._conn.frames_received == 4
                    assert tdp._conn.bytes_received > payload
                    job = await jdc.declare_job(template)
                    assert jdc.stats["missing-txs-requests"] == 1
                    [jds_session] = jds._peers.values()
                    assert jds_session.stats["missing-tx-requests"] == 1
                    assert jds_session.conn.bytes_received > payload
                    sol = solve(template, job.coinbase)
                    jdc.push_solution(job, sol)
                    await jdc.drain()
                    await _until(lambda: jds.found_blocks, "the JDS to accept the block", 20.0)
            finally:
                await jds.stop()
            [found] = jds.found_blocks
            assert chain.tip_hash == sol.block_hash == found.block_hash
            assert len(found.raw_block) > 3_950_000
            assert [t.wtxid for t in Block.parse(found.raw_block).txs[1:]] == [
                tx.wtxid for tx in txs
            ]

    asyncio.run(main())
