"""The JD client against the real JDS (sv2.jds) over TCP + Noise on loopback, templates from a
node on libbitcoinkernel; every mined block is judged by the kernel (the tip must move)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from payouts.distribution.amounts import compute_outputs
from payouts.node.kernel_chain import KernelChain
from payouts.settlement.ctv import CtvNotActiveError, CtvParams
from payouts.settlement.modes import SettlementMode, default_expected_outputs
from payouts.tx.block import Block
from sv2.connection import HandshakeFailed
from sv2.jdc import (
    DeclarationRejected,
    FallbackEvent,
    JdcError,
    JobDeclarationClient,
    JobTemplate,
    OutputConstraints,
    constraints_for,
    solve,
)
from sv2.jds import FoundBlock, JdsLimits, JobDeclarationServer
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from tests.jdc.helpers import (
    AUTHORITY_PK,
    ChainNode,
    fee_tx,
    make_distribution,
    p2pkh,
    setup_chain,
    start_server,
)
from tests.jds.helpers import CtvClaimingKernelNode

Scenario = Callable[[KernelChain, ChainNode, ChainNode], Awaitable[None]]


def run(scenario: Scenario, *, mature: bool = True) -> None:
    """One kernel chain shared by the server's node and the client's node (two mempools)."""

    async def main() -> None:
        with KernelChain() as chain:
            if mature:
                setup_chain(chain)
            await scenario(chain, ChainNode(chain), ChainNode(chain))

    asyncio.run(main())


def client_for(srv: JobDeclarationServer, **kw: Any) -> JobDeclarationClient:
    host, port = srv.address
    return JobDeclarationClient(host, port, AUTHORITY_PK, timeout=5.0, **kw)


async def wait_found(srv: JobDeclarationServer, n: int = 1, timeout: float = 5.0) -> FoundBlock:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while len(srv.found_blocks) < n:
        if loop.time() > end:
            raise AssertionError(f"no block accepted; server stats {srv.stats}")
        await asyncio.sleep(0.01)
    return srv.found_blocks[n - 1]


def test_happy_path_end_to_end() -> None:
    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        tx = fee_tx(chain, 1, 2_000)
        srv_node.add_mempool(tx)
        cli_node.add_mempool(tx)
        dist = make_distribution(1, payees=6)
        srv = await start_server(srv_node, dist)
        seen: list[OutputConstraints] = []
        try:
            async with client_for(srv, on_constraints=seen.append) as c:
                assert c.negotiated == {EXT_NON_CUSTODIAL_PAYOUTS, EXT_SETTLEMENT_MODES}
                assert c.distribution == dist
                assert c.mode_for(1).name == "coinbase"
                # PR #203: constraints come from the distribution, once it is there.
                assert c.constraints == constraints_for(dist) and seen == [c.constraints]
                size = sum(
                    8 + 1 + len(s)
                    for s in [dist.pool_payout.script, *(p.script for p in dist.payouts)]
                )
                assert c.constraints_message().coinbase_output_max_additional_size == size
                assert c.constraints_message().coinbase_output_max_additional_sigops == 0
                template = JobTemplate.from_block_template(await cli_node.block_template())
                job = await c.declare_job(template)
                assert job.attempts == 1 and job.distribution_id == 1 and job.mode == "coinbase"
                sol = solve(template, job.coinbase, bytes.fromhex("0011223344556677"))
                c.push_solution(job, sol)
                found = await wait_found(srv)
        finally:
            await srv.stop()
        # The kernel connected the block: the tip is the solved header.
        assert chain.tip_hash == sol.block_hash == found.block_hash
        cb = found.coinbase
        expected = compute_outputs(dist, template.revenue).outputs
        assert cb.outputs[: len(expected)] == expected
        assert sum(o.value for o in cb.outputs) == template.revenue
        assert chain.blocks[-1].txs[1].wtxid == tx.wtxid
        # Invariant 3: the block the server rebuilt is byte-identical to the client's.
        assert found.raw_block == sol.block.serialize()
        assert cb.serialize() == job.coinbase.parts.serialize(sol.extranonce)

    run(scenario)


@pytest.mark.parametrize(
    "mode",
    [SettlementMode("coinbase"), SettlementMode("ctv", CtvParams(arity=4, fee_rate=1))],
    ids=["coinbase", "ctv"],
)
def test_client_and_server_outputs_byte_identical(mode: SettlementMode) -> None:
    """Invariant 3 per settlement mode: the server's expected outputs for (distribution, T) are
    the client's payout outputs, byte for byte, and the server accepts the declaration."""

    async def scenario(chain: KernelChain, _srv: ChainNode, _cli: ChainNode) -> None:
        # Both nodes claim CTV so the ctv mode runs at all; the kernel does not enforce CTV,
        # so this checks byte identity and the block, not a fan-out's enforcement.
        srv_node, cli_node = CtvClaimingKernelNode(chain), CtvClaimingKernelNode(chain)
        dist = make_distribution(3, payees=9)
        srv = await start_server(srv_node, dist, mode=mode)
        try:
            async with client_for(srv, node=cli_node) as c:
                assert c.mode_for(3) == mode  # SetSettlementMode round-tripped
                template = JobTemplate.from_block_template(await cli_node.block_template())
                job = await c.declare_job(template)
                server_side = tuple(default_expected_outputs(mode, dist, template.revenue))
                assert job.payout_outputs == server_side
                assert b"".join(o.serialize() for o in job.payout_outputs) == b"".join(
                    o.serialize() for o in server_side
                )
                job_srv = srv.declared_job(job.token)
                assert job_srv is not None and job_srv.payout_outputs == server_side
                c.push_solution(job, solve(template, job.coinbase))
                found = await wait_found(srv)
                assert found.job.mode == mode.name
        finally:
            await srv.stop()
        # (The kernel does not enforce CTV: it judges the block, not the fan-out.)
        assert chain.tip_hash == found.block_hash

    run(scenario, mature=False)


def test_missing_transactions_round_trip() -> None:
    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        known, hidden = fee_tx(chain, 1, 1_500), fee_tx(chain, 2, 2_500)
        srv_node.add_mempool(known)
        cli_node.add_mempool(known)
        cli_node.add_mempool(hidden)  # the JDS's node has never seen it
        dist = make_distribution(1)
        srv = await start_server(srv_node, dist)
        try:
            async with client_for(srv) as c:
                template = JobTemplate.from_block_template(await cli_node.block_template())
                assert template.wtxids == (known.wtxid, hidden.wtxid)
                job = await c.declare_job(template)
                assert c.stats["missing-txs-requests"] == 1
                c.push_solution(job, solve(template, job.coinbase))
                found = await wait_found(srv)
        finally:
            await srv.stop()
        block = Block.parse(found.raw_block)
        assert [t.wtxid for t in block.txs[1:]] == [known.wtxid, hidden.wtxid]
        assert chain.tip_hash == found.block_hash
        assert found.revenue == chain.subsidy(102) + 4_000

    run(scenario)


def test_distribution_update_mid_session_stale_then_redeclare() -> None:
    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        d1, d2 = make_distribution(1), make_distribution(2, payees=7)
        srv = await start_server(srv_node, d1)
        try:
            async with client_for(srv) as c:
                template = JobTemplate.from_block_template(await cli_node.block_template())
                assert c.distribution == d1
                # A block was found: d2 replaces d1 with no grace (PR #203 §10). The client
                # still declares with d1 (the push has not been read yet) -> stale -> redeclare.
                srv.publish(d2, settlement=True)
                job = await c.declare_job(template, distribution=c.distribution)
                assert job.attempts == 2 and job.distribution_id == 2
                assert c.stats["declare-error:stale-payout-distribution"] == 1
                assert c.distribution == d2 and c.previous_distribution == d1
                assert c.constraints == constraints_for(d2)
                assert not c.fallback.is_set()
                assert job.payout_outputs == compute_outputs(d2, template.revenue).outputs
                c.push_solution(job, solve(template, job.coinbase))
                found = await wait_found(srv)
                assert found.distribution_id == 2
        finally:
            await srv.stop()
        assert chain.tip_hash == found.block_hash

    run(scenario, mature=False)


@pytest.mark.parametrize("own_node", ["kernel", "none"])
def test_ctv_mode_refused_when_the_own_node_does_not_enforce_ctv(own_node: str) -> None:
    """ARCHITECTURE invariant 4 on the miner's side: the pool (its node claims CTV) settles in
    ctv mode, but the client's own node does not report checktemplateverify active (the
    kernel), or the client has no node to ask: no ctv coinbase is built, no token is even
    allocated, the fallback fires with ``ctv-not-active``. A coinbase-mode distribution that
    follows is declared as usual."""

    async def scenario(chain: KernelChain, _srv: ChainNode, cli_node: ChainNode) -> None:
        srv = await start_server(
            CtvClaimingKernelNode(chain),
            make_distribution(1),
            mode=SettlementMode("ctv", CtvParams(arity=4, fee_rate=1)),
        )
        events: list[FallbackEvent] = []
        node = cli_node if own_node == "kernel" else None
        try:
            async with client_for(srv, node=node, on_fallback=events.append) as c:
                assert c.mode_for(1).name == "ctv"
                template = JobTemplate.from_block_template(await cli_node.block_template())
                with pytest.raises(DeclarationRejected) as info:
                    await c.declare_job(template)
                ev = info.value.event
                assert ev.code == "ctv-not-active" and events == [ev] and ev.coinbase is None
                assert ("does not report" if node else "no node to ask") in ev.details
                assert c.ctv_active is (False if node else None)
                # Refused before any request: the server saw no token request, no job.
                assert len(srv.tokens) == 0
                assert not any(k.startswith("declare") for k in srv.stats)
                with pytest.raises(CtvNotActiveError):
                    c.build_coinbase(template)  # the sync builder refuses as well
                srv.publish(make_distribution(2), mode=SettlementMode("coinbase"))
                await c.wait_for_distribution(after=1)
                job = await c.declare_job(template)
                assert job.mode == "coinbase" and job.distribution_id == 2
        finally:
            await srv.stop()

    run(scenario, mature=False)


def test_rejection_fires_fallback() -> None:
    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        srv = await start_server(srv_node, make_distribution(1))
        events: list[FallbackEvent] = []
        try:
            async with client_for(srv, on_fallback=events.append) as c:
                good = JobTemplate.from_block_template(await cli_node.block_template())
                # A client that claims 1,000 sat more than subsidy + fees: the JDS refuses.
                bad = JobTemplate(
                    good.version,
                    good.prev_hash,
                    good.height,
                    good.bits,
                    good.time,
                    good.revenue + 1_000,
                    good.outputs,
                    good.transactions,
                )
                with pytest.raises(DeclarationRejected) as info:
                    await c.declare_job(bad)
                assert info.value.event.code == "invalid-coinbase-value"
                assert c.fallback.is_set() and events == [info.value.event]
                assert events[0].template is bad and events[0].attempts == 1
                # The connection survives: the next (honest) job is accepted.
                job = await c.declare_job(good)
                assert job.attempts == 1
        finally:
            await srv.stop()

    run(scenario, mature=False)


def test_persistent_stale_falls_back() -> None:
    """PR #203 §7.3: stale-payout-distribution falls back only when it persists; with no
    redeclarations left the fallback fires with that code."""

    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        srv = await start_server(srv_node, make_distribution(1))
        events: list[FallbackEvent] = []
        try:
            async with client_for(srv, max_redeclare=0, on_fallback=events.append) as c:
                template = JobTemplate.from_block_template(await cli_node.block_template())
                srv.publish(make_distribution(2), settlement=True)
                with pytest.raises(DeclarationRejected) as info:
                    await c.declare_job(template, distribution=c.distribution)
                assert info.value.event.code == "stale-payout-distribution"
                assert info.value.event.distribution_id == 1 and events == [info.value.event]
        finally:
            await srv.stop()

    run(scenario, mature=False)


def test_per_job_adapter_flow() -> None:
    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        tx = fee_tx(chain, 1, 3_000)
        srv_node.add_mempool(tx)
        cli_node.add_mempool(tx)
        dist = make_distribution(5, payees=4)
        srv = await start_server(
            srv_node,
            dist,
            supported_extensions=(EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS),
        )
        try:
            async with client_for(srv, extensions=(EXT_PER_JOB_PAYOUTS,)) as c:
                assert c.negotiated == {EXT_PER_JOB_PAYOUTS}
                assert c.distribution is None and c.constraints is None
                with pytest.raises(JdcError):
                    c.constraints_message()  # nothing to compute it from
                template = JobTemplate.from_block_template(await cli_node.block_template())
                job = await c.declare_job_per_job(template)
                assert job.mode == "per-job"
                assert job.payout_outputs == compute_outputs(dist, template.revenue).outputs
                c.push_solution(job, solve(template, job.coinbase))
                found = await wait_found(srv)
        finally:
            await srv.stop()
        assert found.job.mode == "per-job" and chain.tip_hash == found.block_hash

    run(scenario)


def test_wrong_authority_key_refused() -> None:
    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        srv = await start_server(srv_node, make_distribution(1))
        try:
            host, port = srv.address
            c = JobDeclarationClient(
                host,
                port,
                bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
            )
            with pytest.raises(HandshakeFailed):
                await c.connect()
            await c.close()
        finally:
            await srv.stop()

    run(scenario, mature=False)


def test_p2pkh_distribution_constraints_count_sigops() -> None:
    async def scenario(chain: KernelChain, srv_node: ChainNode, cli_node: ChainNode) -> None:
        from payouts.distribution.model import Distribution, Payee, PoolPayout

        dist = Distribution(
            1, PoolPayout(p2pkh(0), 10), tuple(Payee(p2pkh(i), 100, 546) for i in range(1, 4))
        )
        srv = await start_server(srv_node, dist, limits=JdsLimits(grace_period=0.0))
        try:
            async with client_for(srv) as c:
                assert c.constraints is not None
                assert c.constraints.max_additional_sigops == 4 * 4  # P2PKH costs 4 each
                assert c.constraints.max_additional_size == 4 * 34
        finally:
            await srv.stop()

    run(scenario, mature=False)
