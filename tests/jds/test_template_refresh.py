"""The node's template is refreshed by a background task of the JDS (every
``template_refresh`` s, started by ``start()``, cancelled by ``stop()``): a declaration on the
current tip never waits for the node's template, while a declaration that finds a new tip loads
that tip's template first, as it always did. The node here can hold ``block_template()`` open,
so "does not wait" is observable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from payouts.node.interface import BlockTemplate, NodeError
from payouts.node.kernel_chain import KernelChain
from payouts.tx.txout import TxOut
from sv2.jds import JdsLimits, JobDeclarationServer
from sv2.messages import (
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
)
from tests.jds.helpers import (
    JdClient,
    KernelTestNode,
    build_declaration,
    fee_tx,
    make_distribution,
    set_up_client,
    setup_chain,
    start_server,
    wait_until,
)

REFRESH = 0.05


class GatedNode(KernelTestNode):
    """``block_template()`` waits while ``gate`` is closed; ``blocked`` is set while a call
    waits; ``fail`` makes the next call raise NodeError."""

    def __init__(self, chain: KernelChain) -> None:
        super().__init__(chain)
        self.gate = asyncio.Event()
        self.gate.set()
        self.blocked = asyncio.Event()
        self.fail = False

    async def block_template(self) -> BlockTemplate:
        if self.fail:
            self.fail = False
            raise NodeError("node unreachable")
        if not self.gate.is_set():
            self.blocked.set()
            await self.gate.wait()
            self.blocked.clear()
        return await super().block_template()


Scenario = Callable[[KernelChain, GatedNode, JobDeclarationServer, JdClient], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = GatedNode(chain)
            limits = JdsLimits(handshake_timeout=2.0, idle_timeout=10.0, template_refresh=REFRESH)
            srv = await start_server(node, limits=limits)
            c = await set_up_client(srv)
            try:
                await scenario(chain, node, srv, c)
            finally:
                c.close()
                await srv.stop()
            # stop() cancelled the refresh task with the connections: nothing left running.
            assert not srv._tasks
            calls = node.template_calls
            await asyncio.sleep(3 * REFRESH)
            assert node.template_calls == calls

    asyncio.run(main())


async def declare(c: JdClient, chain: KernelChain, txs: list[Any], fees: int) -> Any:
    decl = build_declaration(make_distribution(), chain, txs, fees=fees)
    tok = await c.token()
    c.send(decl.message(tok.mining_job_token))
    return await c.recv(timeout=2.0)


def test_same_tip_declaration_does_not_wait_for_the_refresh() -> None:
    async def scenario(
        chain: KernelChain, node: GatedNode, srv: JobDeclarationServer, c: JdClient
    ) -> None:
        a = fee_tx(chain, 1, 700)
        node.add_mempool(a)
        # The first declaration loads the tip's template (nothing loaded yet).
        assert isinstance(await declare(c, chain, [a], 700), DeclareMiningJobSuccess)
        assert srv.txs.template_prev_hash == chain.tip_hash
        # The node now holds every block_template() call: the background refresh hangs...
        node.gate.clear()
        await asyncio.wait_for(node.blocked.wait(), 2.0)
        calls = node.template_calls
        # ... and declarations on this tip go on from the loaded template (before, one older
        # than template_refresh made the declaration itself call block_template()).
        for _ in range(3):
            await asyncio.sleep(2 * REFRESH)
            assert isinstance(await declare(c, chain, [a], 700), DeclareMiningJobSuccess)
        # A tx that entered the mempool after the load: the node's mempool still resolves it
        # (fee unknown: a coinbase at least subsidy + known fees passes), ...
        b = fee_tx(chain, 2, 800)
        node.add_mempool(b)
        assert isinstance(await declare(c, chain, [a, b], 1_500), DeclareMiningJobSuccess)
        kb = srv.txs.get(b.wtxid)
        assert kb is not None and kb.fee is None
        # ... one nobody has goes through ProvideMissingTransactions, as before.
        x = fee_tx(chain, 3, 900)
        decl = build_declaration(make_distribution(), chain, [a, x], fees=1_600)
        tok = await c.token()
        c.send(decl.message(tok.mining_job_token, request_id=70))
        pmt = await c.expect(ProvideMissingTransactions)
        assert pmt.unknown_tx_position_list == (1,)
        assert node.template_calls == calls  # no declaration asked the node for a template
        # The refresh completes: b now carries the template's exact fee, so a coinbase that
        # claims one satoshi more than subsidy + fees is refused.
        node.gate.set()
        await wait_until(lambda: (k := srv.txs.get(b.wtxid)) is not None and k.fee == 800)
        over = build_declaration(make_distribution(), chain, [a, b], fees=1_501)
        tok = await c.token()
        c.send(over.message(tok.mining_job_token, request_id=71))
        superseded = await c.expect(DeclareMiningJobError)  # the one waiting for x
        assert (superseded.request_id, superseded.error_code) == (70, "job-superseded")
        refused = await c.expect(DeclareMiningJobError)
        assert (refused.request_id, refused.error_code) == (71, "invalid-coinbase-value")

    run(scenario)


def test_new_tip_declaration_loads_the_new_template_first() -> None:
    async def scenario(
        chain: KernelChain, node: GatedNode, srv: JobDeclarationServer, c: JdClient
    ) -> None:
        a, b = fee_tx(chain, 1, 700), fee_tx(chain, 2, 800)
        node.add_mempool(a)
        node.add_mempool(b)
        assert isinstance(await declare(c, chain, [a, b], 1_500), DeclareMiningJobSuccess)
        old_tip = chain.tip_hash
        # A block mines a; the node's template and the refresh are held.
        node.gate.clear()
        await asyncio.wait_for(node.blocked.wait(), 2.0)
        chain.mine_block([TxOut(chain.subsidy(chain.tip_height + 1) + 700, b"\x51")], [a])
        node.mempool.pop(a.wtxid)
        # A declaration still on the old tip: stale-chain-tip at once, no template needed.
        stale = build_declaration(
            make_distribution(), chain, [b], fees=800, height=chain.tip_height
        )
        tok = await c.token()
        c.send(stale.message(tok.mining_job_token))
        reply = await c.recv(timeout=2.0)
        assert isinstance(reply, DeclareMiningJobError) and reply.error_code == "stale-chain-tip"
        # A declaration on the new tip waits for the new tip's template (as it always did).
        decl = build_declaration(make_distribution(), chain, [b], fees=800)
        tok = await c.token()
        c.send(decl.message(tok.mining_job_token, request_id=9))
        with pytest.raises(TimeoutError):
            await c.recv(timeout=0.3)
        assert srv.txs.template_prev_hash == old_tip
        node.gate.set()
        ok = await c.recv(timeout=2.0)
        assert isinstance(ok, DeclareMiningJobSuccess) and ok.request_id == 9
        # The store was emptied for the new tip: the mined tx is gone, b carries its fee.
        assert srv.txs.template_prev_hash == chain.tip_hash
        assert srv.txs.get(a.wtxid) is None
        assert srv.txs.get(b.wtxid).fee == 800  # type: ignore[union-attr]
        # Declaring the mined tx again: the node no longer has it, the client is asked.
        again = build_declaration(make_distribution(), chain, [a], fees=700)
        tok = await c.token()
        c.send(again.message(tok.mining_job_token, request_id=10))
        pmt = await c.expect(ProvideMissingTransactions)
        assert pmt.request_id == 10

    run(scenario)


def test_a_failed_refresh_is_counted_and_retried() -> None:
    async def scenario(
        chain: KernelChain, node: GatedNode, srv: JobDeclarationServer, c: JdClient
    ) -> None:
        a = fee_tx(chain, 1, 700)
        node.add_mempool(a)
        node.fail = True
        await wait_until(lambda: srv.stats.get("template-refresh-errors") == 1)
        # The next interval loads the template anyway.
        await wait_until(lambda: srv.txs.get(a.wtxid) is not None)
        assert srv.txs.get(a.wtxid).fee == 700  # type: ignore[union-attr]
        assert isinstance(await declare(c, chain, [a], 700), DeclareMiningJobSuccess)

    run(scenario)
