"""The Template Distribution client against our Template Provider over real loopback TCP +
Noise, the TP backed by a libbitcoinkernel node (blocks judged by the kernel), and against a
scripted TP for the client's handling of bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from payouts.node.kernel_chain import KernelChain
from sv2.connection import HandshakeFailed
from sv2.jdc import JobTemplate, build_job_coinbase, constraints_for, solve
from sv2.messages.common import PROTOCOL_JOB_DECLARATION, SetupConnectionError
from sv2.messages.template_distribution import (
    CoinbaseOutputConstraints,
    RequestTransactionData,
    RequestTransactionDataError,
    SubmitSolution,
)
from sv2.session import setup_connection
from sv2.tdp import (
    STALE_TEMPLATE_ID,
    TEMPLATE_ID_NOT_FOUND,
    TdpConnectionLost,
    TdpSetupRejected,
    TdpTimeout,
    TemplateDistributionClient,
    TransactionDataUnavailable,
)
from tests.jdc.helpers import AUTHORITY_PK, ChainNode, fee_tx, make_distribution, setup_chain
from tests.tdp.helpers import TP_PK, ScriptedPeer, running_tp, scripted_tp

CONSTRAINTS = constraints_for(make_distribution(1, payees=4)).message()
Scenario = Callable[[KernelChain, ChainNode], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            await scenario(chain, ChainNode(chain))

    asyncio.run(main())


def client(addr: tuple[str, int], retries: int = 3) -> TemplateDistributionClient:
    return TemplateDistributionClient(
        addr[0], addr[1], TP_PK, constraints=CONSTRAINTS, timeout=5.0, retries=retries
    )


def test_templates_transactions_and_solution_through_the_tp() -> None:
    async def scenario(chain: KernelChain, node: ChainNode) -> None:
        tx1 = fee_tx(chain, 1, 1_000)
        node.add_mempool(tx1)
        async with running_tp(node) as tp, client(tp.address) as c:
            t1 = await c.template()
            assert c.book.current() is not None and t1.template_id == 1
            assert t1.height == chain.tip_height + 1 and t1.prev_hash == chain.tip_hash
            assert t1.wtxids == (tx1.wtxid,) and t1.revenue == chain.subsidy(102) + 1_000
            # More fees on the same tip: a non-future NewTemplate, active at once.
            tx2 = fee_tx(chain, 2, 4_000)
            node.add_mempool(tx2)
            await tp.refresh()
            t2 = await c.template(newer_than=t1.template_id)
            assert t2.template_id == 2 and t2.wtxids == (tx1.wtxid, tx2.wtxid)
            assert c.book.active is not None and not c.book.active.future_template
            # A JDC coinbase on the TP's template, solved and submitted: the kernel takes it.
            job = build_job_coinbase(make_distribution(1, payees=4), t2)
            sol = solve(t2, job)
            assert await c.submit_solution(t2, sol) is None
            for _ in range(200):
                if tp.solutions:
                    break
                await asyncio.sleep(0.01)
            [s] = tp.solutions
            assert s.accepted and chain.tip_hash == sol.block_hash == s.block_hash
            assert s.raw_block == sol.block.serialize()  # the TP rebuilt the same bytes
            # The TP saw the new tip and pushed a future template + SetNewPrevHash at once.
            t3 = await c.template(newer_than=t2.template_id)
            assert t3.prev_hash == sol.block_hash and t3.height == t2.height + 1
            assert t3.transactions == ()  # both txs are mined
            # Old templates: stale on the old tip, unknown ids never sent.
            with pytest.raises(TransactionDataUnavailable) as info:
                await c.transactions(t2.template_id)
            assert info.value.code == STALE_TEMPLATE_ID
            with pytest.raises(TransactionDataUnavailable) as info:
                await c.transactions(999)
            assert info.value.code == TEMPLATE_ID_NOT_FOUND

    run(scenario)


def test_constraints_update_refits_and_submit_for_unknown_template_is_ignored() -> None:
    async def scenario(chain: KernelChain, node: ChainNode) -> None:
        tx = fee_tx(chain, 1, 1_000)
        node.add_mempool(tx)
        async with running_tp(node) as tp, client(tp.address) as c:
            t1 = await c.template()
            assert len(t1.transactions) == 1
            # Constraints so large that no transaction fits next to the coinbase.
            room = (4_000_000 - 1168 - tx.weight) // 4 + 1
            c.set_constraints(CoinbaseOutputConstraints(room, 0))
            t2 = await c.template(newer_than=t1.template_id)
            assert t2.transactions == () and t2.revenue == t1.revenue - 1_000
            assert t2.prev_hash == t1.prev_hash
            # SubmitSolution for a template this connection never got: nothing submitted.
            sol = solve(t2, build_job_coinbase(make_distribution(1), t2))
            c._send(SubmitSolution(77, sol.header.version, sol.header.time, 0, b"\x00"))
            await c.drain()
            for _ in range(100):
                if tp.stats.get("solution-unknown-template"):
                    break
                await asyncio.sleep(0.01)
            assert tp.stats["solution-unknown-template"] == 1 and tp.solutions == []
            assert node.submitted == []

    run(scenario)


def test_setup_and_authentication_failures() -> None:
    async def scenario(chain: KernelChain, node: ChainNode) -> None:
        async with running_tp(node) as tp:
            host, port = tp.address
            # The pool's authority key is not the TP's: the handshake fails.
            wrong = TemplateDistributionClient(host, port, AUTHORITY_PK, constraints=CONSTRAINTS)
            with pytest.raises(HandshakeFailed):
                await wrong.connect()
            await wrong.close()
            # SetupConnection for the JD protocol on a TP: refused with the spec's reply.
            raw = TemplateDistributionClient(host, port, TP_PK, timeout=5.0)
            await raw._open()
            with pytest.raises(TdpSetupRejected) as info:
                await raw._setup_connection(
                    setup_connection(PROTOCOL_JOB_DECLARATION, 0, host=host, port=port, vendor="t")
                )
            assert info.value.code == "setup-unsupported-protocol"
            await raw.close()
            # Anything before SetupConnection costs the connection, and only that one.
            early = TemplateDistributionClient(host, port, TP_PK, timeout=5.0)
            await early._open()
            early._send(CONSTRAINTS)
            with pytest.raises(TdpConnectionLost):
                await early.wait_for_template(timeout=5.0)
            await early.close()
            async with client((host, port)) as ok:
                assert (await ok.template()).height == chain.tip_height + 1
            # No constraints: the client refuses to connect (PR #203 wants them first).
            with pytest.raises(Exception, match="CoinbaseOutputConstraints"):
                await TemplateDistributionClient(host, port, TP_PK).connect()

    run(scenario)


def test_client_handles_wrong_template_ids_and_errors_from_a_scripted_tp() -> None:
    jt = JobTemplate(0x20000000, b"\x07" * 32, 5, 0x207FFFFF, 1_700_000_000, 5_000_000_000, (), ())

    async def script(peer: ScriptedPeer) -> None:
        first = await peer.accept_setup()
        assert first == CONSTRAINTS  # sent right after SetupConnection.Success
        peer.send(jt.new_template(5, future=True))
        peer.send(jt.set_new_prev_hash(6))  # names a template that never came
        peer.send(jt.new_template(4, future=False))  # id not increasing: refused
        peer.send(jt.new_template(7, future=False))  # builds on the SetNewPrevHash: active
        req = await peer.recv()
        assert req == RequestTransactionData(7)
        peer.send(RequestTransactionDataError(7, STALE_TEMPLATE_ID))
        await peer.recv()  # until the client hangs up

    async def main() -> None:
        async with scripted_tp(script) as addr, client(addr, retries=0) as c:
            nt, snph = await c.wait_for_template()
            assert nt.template_id == 7 and snph.template_id == 6
            assert c.stats["prev-hash-unknown-template"] == 1
            assert c.stats["refused:template-id-not-increasing"] == 1
            with pytest.raises(TransactionDataUnavailable) as info:
                await c.template()
            assert info.value.code == STALE_TEMPLATE_ID
            with pytest.raises(TdpTimeout):
                await c.wait_for_template(newer_than=7, timeout=0.2)

    asyncio.run(main())


def test_setup_error_reply_from_scripted_tp() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.handshake()
        await peer.recv()
        peer.send(SetupConnectionError(0, "protocol-version-mismatch"))
        await asyncio.sleep(0.1)

    async def main() -> None:
        async with scripted_tp(script) as addr:
            c = client(addr)
            with pytest.raises(TdpSetupRejected) as info:
                await c.connect()
            assert info.value.code == "setup-protocol-version-mismatch"
            await c.close()

    asyncio.run(main())
