"""DeclareMiningJob rejections over TCP + Noise: every error code, tokens (expired, foreign,
reused), the grace window, missing transactions, and a mutation test: every single-field
tampering of a valid declared coinbase is rejected."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from payouts.distribution.model import Distribution
from payouts.node.kernel_chain import KernelChain
from payouts.tx.transaction import Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.jds import JdsLimits, JobDeclarationServer
from sv2.messages import (
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    SetPayoutDistribution,
    SetSettlementMode,
)
from tests.jds.helpers import (
    Declaration,
    JdClient,
    KernelTestNode,
    build_declaration,
    fee_tx,
    make_distribution,
    set_up_client,
    setup_chain,
    start_server,
)

Scenario = Callable[[KernelChain, KernelTestNode, JobDeclarationServer, JdClient], Awaitable[None]]


def run(scenario: Scenario, **server_kw: Any) -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            srv = await start_server(node, server_kw.pop("dist", None), **server_kw)
            c = await set_up_client(srv)
            try:
                await scenario(chain, node, srv, c)
            finally:
                c.close()
                await srv.stop()

    asyncio.run(main())


async def declare(c: JdClient, msg: DeclareMiningJob) -> Any:
    c.send(msg)
    return await c.recv()


async def declare_decl(
    c: JdClient, decl: Declaration, dist_id: int | None = 1, request_id: int = 7
) -> Any:
    tok = await c.token()
    return await declare(c, decl.message(tok.mining_job_token, request_id, dist_id))


def assert_error(reply: Any, code: str) -> None:
    assert isinstance(reply, DeclareMiningJobError), reply
    assert reply.error_code == code, (reply.error_code, reply.error_details)


# -- tokens -----------------------------------------------------------------------------------


def test_token_unknown_reused_declared_and_foreign() -> None:
    async def scenario(chain: KernelChain, node: Any, srv: Any, c: JdClient) -> None:
        decl = build_declaration(make_distribution(), chain)
        assert_error(await declare(c, decl.message(os.urandom(16))), "invalid-mining-job-token")
        assert_error(await declare(c, decl.message(b"")), "invalid-mining-job-token")
        tok = (await c.token()).mining_job_token
        ok = await declare(c, decl.message(tok))
        assert isinstance(ok, DeclareMiningJobSuccess), ok
        # Single use: the allocated token is gone; the Success token is not a declare token.
        assert_error(await declare(c, decl.message(tok)), "invalid-mining-job-token")
        assert_error(
            await declare(c, decl.message(ok.new_mining_job_token)), "invalid-mining-job-token"
        )
        # Foreign: another connection's token is unknown to this one.
        other = await JdClient.connect(srv.address)
        try:
            await other.setup()
            await other.expect(SetPayoutDistribution)
            await other.expect(SetSettlementMode)
            foreign = (await other.token()).mining_job_token
            assert_error(await declare(c, decl.message(foreign)), "invalid-mining-job-token")
            # ... and it is still good for its owner.
            assert isinstance(await declare(other, decl.message(foreign)), DeclareMiningJobSuccess)
        finally:
            other.close()
        # Tokens are unique and not sequential-guessable: the random half differs.
        t1, t2 = (await c.token(2)).mining_job_token, (await c.token(3)).mining_job_token
        assert t1 != t2 and t1[8:] != t2[8:]

    run(scenario)


def test_token_expiry_checked_at_use() -> None:
    now = [1000.0]

    async def scenario(chain: KernelChain, node: Any, srv: Any, c: JdClient) -> None:
        decl = build_declaration(make_distribution(), chain)
        tok = (await c.token()).mining_job_token
        now[0] += 59.9
        tok2 = (await c.token()).mining_job_token
        assert isinstance(await declare(c, decl.message(tok)), DeclareMiningJobSuccess)
        now[0] += 0.2  # tok2 was issued at 1059.9: still valid at 1060.1 + ... until 1119.9
        now[0] += 60.0
        reply = await declare(c, decl.message(tok2))
        assert_error(reply, "invalid-mining-job-token")
        assert b"expired" in reply.error_details

    run(scenario, token_lifetime=60.0, clock=lambda: now[0])


# -- distributions (PR #203) ------------------------------------------------------------------


def test_distribution_tlv_rules_and_grace_window() -> None:
    now = [0.0]

    async def scenario(chain: KernelChain, node: Any, srv: Any, c: JdClient) -> None:
        d1 = make_distribution(1)
        decl1 = build_declaration(d1, chain)
        assert_error(await declare_decl(c, decl1, dist_id=None), "invalid-payout-distribution")
        assert_error(await declare_decl(c, decl1, dist_id=99), "invalid-payout-distribution")
        d2 = make_distribution(2, payees=4, pool_weight=50)
        srv.publish(d2)
        await c.expect(SetPayoutDistribution)
        await c.expect(SetSettlementMode)
        # Grace window: the previous distribution is accepted for grace_period seconds...
        now[0] += 5.0
        assert isinstance(await declare_decl(c, decl1, 1), DeclareMiningJobSuccess)
        # ... but its outputs are checked against *its* weights, not the current ones.
        assert_error(await declare_decl(c, decl1, 2), "invalid-payout-distribution")
        now[0] += 5.1
        assert_error(await declare_decl(c, decl1, 1), "stale-payout-distribution")
        decl2 = build_declaration(d2, chain)
        assert isinstance(await declare_decl(c, decl2, 2), DeclareMiningJobSuccess)
        # After a settlement, earlier distributions are stale at once (PR #203 §10).
        srv.publish(make_distribution(3), settlement=True)
        await c.expect(SetPayoutDistribution)
        await c.expect(SetSettlementMode)
        assert_error(await declare_decl(c, decl2, 2), "stale-payout-distribution")
        # Two back is stale even inside a grace window.
        srv.publish(make_distribution(4))
        await c.expect(SetPayoutDistribution)
        await c.expect(SetSettlementMode)
        assert_error(await declare_decl(c, decl2, 2), "stale-payout-distribution")
        with pytest.raises(Exception, match="strictly"):
            srv.publish(make_distribution(4))

    run(scenario, clock=lambda: now[0], limits=JdsLimits(grace_period=10.0))


def test_base_spec_client_pool_payout() -> None:
    """A client without 0x0003: the pool output must carry all of T; a TLV is refused."""

    async def scenario(chain: KernelChain, node: Any, srv: Any, c0: JdClient) -> None:
        c = await JdClient.connect(srv.address)
        try:
            await c.setup(extensions=None)  # no RequestExtensions at all
            tok = await c.token()
            pool_script = make_distribution().pool_payout.script
            assert tok.coinbase_tx_outputs == b"\x01" + bytes(8) + b"\x16" + pool_script
            t = chain.subsidy(chain.tip_height + 1)
            good = build_declaration(
                make_distribution(), chain, payout_outputs=[TxOut(t, pool_script)]
            )
            assert isinstance(await declare_decl(c, good, None), DeclareMiningJobSuccess)
            assert_error(await declare_decl(c, good, 1), "extension-not-negotiated")
            split = build_declaration(
                make_distribution(),
                chain,
                payout_outputs=[TxOut(t - 1, pool_script), TxOut(1, pool_script)],
            )
            assert_error(await declare_decl(c, split, None), "invalid-pool-payout")
        finally:
            c.close()

    run(scenario)


# -- coinbase, chain, transactions ------------------------------------------------------------


def test_coinbase_shape_height_and_wtxid_list() -> None:
    async def scenario(chain: KernelChain, node: Any, srv: Any, c: JdClient) -> None:
        d = make_distribution()
        decl = build_declaration(d, chain)
        bad = replace(decl, prefix=os.urandom(60))
        assert_error(await declare_decl(c, bad), "invalid-coinbase-tx")
        legacy = replace(decl, prefix=decl.prefix[:4] + decl.prefix[6:])  # marker/flag stripped
        assert_error(await declare_decl(c, legacy), "invalid-coinbase-tx")
        two_inputs = replace(decl, prefix=decl.prefix[:6] + b"\x02" + decl.prefix[7:])
        assert_error(await declare_decl(c, two_inputs), "invalid-coinbase-tx-input")
        not_cb = replace(decl, prefix=decl.prefix[:7] + b"\x01" + decl.prefix[8:])
        assert_error(await declare_decl(c, not_cb), "invalid-coinbase-tx-input")
        truncated = replace(decl, suffix=decl.suffix[:-1])
        assert_error(await declare_decl(c, truncated), "invalid-coinbase-tx")
        for h in (chain.tip_height, chain.tip_height + 2, 1):
            assert_error(
                await declare_decl(c, build_declaration(d, chain, height=h)), "stale-chain-tip"
            )
        tx = fee_tx(chain, 1)
        node.add_mempool(tx)
        dup = build_declaration(d, chain, [tx, tx], fees=2_000)
        assert_error(await declare_decl(c, dup), "duplicate-wtxid")
        many = replace(decl, wtxids=tuple(os.urandom(32) for _ in range(16_667)))
        assert_error(await declare_decl(c, many), "too-many-transactions")
        # Wrong fee total: the coinbase claims fees it does not have / forgets some.
        over = build_declaration(d, chain, [tx], fees=1_001)
        assert_error(await declare_decl(c, over), "invalid-coinbase-value")
        under = build_declaration(d, chain, [tx], fees=999)
        assert_error(await declare_decl(c, under), "invalid-coinbase-value")
        # Commitment to other wtxids.
        other = build_declaration(d, chain, [tx], fees=1_000)
        wrong = replace(other, wtxids=())
        assert_error(await declare_decl(c, wrong), "invalid-witness-commitment")
        nocommit = build_declaration(d, chain, [], fees=1_000)
        assert_error(
            await declare_decl(c, replace(nocommit, wtxids=other.wtxids)),
            "invalid-witness-commitment",
        )
        # And the right one passes.
        assert isinstance(await declare_decl(c, other), DeclareMiningJobSuccess)

    run(scenario)


def test_missing_transactions_rules() -> None:
    async def scenario(chain: KernelChain, node: Any, srv: Any, c: JdClient) -> None:
        d = make_distribution()
        a, b, x = fee_tx(chain, 1, 700), fee_tx(chain, 2, 800), fee_tx(chain, 3, 900)
        node.add_mempool(a)
        decl = build_declaration(d, chain, [a, b], fees=1_500)

        async def ask(rid: int) -> None:
            tok = await c.token()
            c.send(decl.message(tok.mining_job_token, rid))
            pmt = await c.expect(ProvideMissingTransactions)
            assert pmt.request_id == rid and pmt.unknown_tx_position_list == (1,)

        cases: list[tuple[tuple[bytes, ...], str]] = [
            ((), "missing-txs"),
            ((x.serialize(),), "undeclared-transaction"),
            ((b.serialize(), b.serialize()), "duplicate-provided-transaction"),
            ((b"\x02\x00\x00\x00garbage",), "invalid-provided-transactions"),
            ((chain.blocks[5].txs[0].serialize(),), "coinbase-transaction-provided"),
        ]
        for rid, (txs, code) in enumerate(cases, start=10):
            await ask(rid)
            c.send(ProvideMissingTransactionsSuccess(rid, txs))
            assert_error(await c.recv(), code)
            assert srv.txs.get(b.wtxid) is None  # nothing staged from a rejected job
        # A late answer for an unknown request id is ignored.
        c.send(ProvideMissingTransactionsSuccess(999, (b.serialize(),)))
        # Superseded: a new declaration while one waits for its transactions.
        await ask(20)
        tok = await c.token()
        c.send(decl.message(tok.mining_job_token, 21))
        superseded = await c.recv()
        assert_error(superseded, "job-superseded")
        assert superseded.request_id == 20
        assert (await c.expect(ProvideMissingTransactions)).request_id == 21
        c.send(ProvideMissingTransactionsSuccess(21, (b.serialize(),)))
        assert isinstance(await c.recv(), DeclareMiningJobSuccess)
        # The tip moves while transactions are in flight -> stale-chain-tip.
        node.mempool.pop(a.wtxid)
        decl2 = build_declaration(d, chain, [a], fees=700)
        tok = await c.token()
        srv.txs.clear()
        c.send(decl2.message(tok.mining_job_token, 30))
        await c.expect(ProvideMissingTransactions)
        chain.mine_empty(1, b"\x51")
        c.send(ProvideMissingTransactionsSuccess(30, (a.serialize(),)))
        assert_error(await c.recv(), "stale-chain-tip")

    run(scenario)


def test_block_limits_unit() -> None:
    """Weight and sigop limits, at the validation layer (building a 4 MWU tx over TCP would
    only test the frame limit)."""
    from payouts.tx.coinbase import witness_commitment
    from sv2.jds.validation import (
        KnownTx,
        PayoutRule,
        parse_declared_coinbase,
        validate_declaration,
    )

    with KernelChain() as chain:
        setup_chain(chain)
        tx = fee_tx(chain, 1, 1_000)
        d = make_distribution()
        decl = build_declaration(d, chain, [tx], fees=1_000)
        cb = parse_declared_coinbase(decl.prefix, decl.suffix)
        from payouts.distribution import compute_outputs

        rule = PayoutRule(
            "invalid-payout-distribution", lambda t: compute_outputs(d, t).outputs, "d"
        )
        sub = chain.subsidy(decl.height)
        k = KnownTx.of(tx, fee=1_000)
        v = validate_declaration(cb, [k], height=decl.height, subsidy=sub, rule=rule)
        assert v.revenue == sub + 1_000 and v.fees_known
        heavy = replace(k, weight=4_000_000)
        with pytest.raises(Exception) as ei:
            validate_declaration(cb, [heavy], height=decl.height, subsidy=sub, rule=rule)
        assert getattr(ei.value, "code", "") == "block-weight-exceeded"
        sigops = replace(k, sigops=80_001)
        with pytest.raises(Exception) as ei:
            validate_declaration(cb, [sigops], height=decl.height, subsidy=sub, rule=rule)
        assert getattr(ei.value, "code", "") == "block-sigops-exceeded"
        # Unknown fee: T is the coinbase value, at least subsidy + known fees.
        unknown = replace(k, fee=None)
        v = validate_declaration(cb, [unknown], height=decl.height, subsidy=sub, rule=rule)
        assert v.revenue == sub + 1_000 and not v.fees_known
        assert witness_commitment([tx.wtxid]) == decl.outputs[-1].script[6:38]


# -- mutations --------------------------------------------------------------------------------


def _resplit(decl: Declaration, tx: Tx) -> Declaration:
    raw = tx.serialize()
    n = len(decl.prefix)
    return replace(decl, prefix=raw[:n], suffix=raw[n + decl.extranonce_size :])


def _with_outputs(decl: Declaration, outputs: list[TxOut]) -> Declaration:
    tx = Tx.parse(decl.prefix + bytes(decl.extranonce_size) + decl.suffix)
    return _resplit(decl, Tx(tx.version, tx.inputs, tuple(outputs), tx.locktime))


def mutations(
    decl: Declaration, dist: Distribution, chain: KernelChain
) -> list[tuple[str, Declaration]]:
    outs = list(decl.outputs)
    last = len(outs) - 1  # the witness commitment
    out: list[tuple[str, Declaration]] = []
    for i, o in enumerate(outs):
        out.append(
            (
                f"out{i}+1",
                _with_outputs(decl, [*outs[:i], replace(o, value=o.value + 1), *outs[i + 1 :]]),
            )
        )
        if o.value:
            out.append(
                (
                    f"out{i}-1",
                    _with_outputs(decl, [*outs[:i], replace(o, value=o.value - 1), *outs[i + 1 :]]),
                )
            )
        for j in range(len(o.script)):
            s = bytearray(o.script)
            s[j] ^= 0x01
            out.append(
                (
                    f"out{i}.script[{j}]",
                    _with_outputs(decl, [*outs[:i], replace(o, script=bytes(s)), *outs[i + 1 :]]),
                )
            )
        if i < last:
            out.append((f"remove{i}", _with_outputs(decl, outs[:i] + outs[i + 1 :])))
            # Removal with the value moved to the pool output: the total is preserved.
            moved = [*outs[:i], *outs[i + 1 :]]
            moved[0] = replace(moved[0], value=moved[0].value + o.value) if i else moved[0]
            if i:
                out.append((f"remove{i}-to-pool", _with_outputs(decl, moved)))
        if i + 1 < len(outs):
            sw = list(outs)
            sw[i], sw[i + 1] = sw[i + 1], sw[i]
            out.append((f"swap{i}", _with_outputs(decl, sw)))
        if 0 < i < last - 1:
            # One sat from payee i to payee i+1: total preserved, amounts wrong.
            mv = list(outs)
            mv[i] = replace(mv[i], value=mv[i].value - 1)
            mv[i + 1] = replace(mv[i + 1], value=mv[i + 1].value + 1)
            out.append((f"shift{i}", _with_outputs(decl, mv)))
    extra = TxOut(1, outs[1].script)
    out.append(("extra-nonzero", _with_outputs(decl, [*outs[:last], extra, outs[last]])))
    pool_less = [replace(outs[0], value=outs[0].value - 1), *outs[1:last], extra, outs[last]]
    out.append(("extra-nonzero-from-pool", _with_outputs(decl, pool_less)))
    out.append(("commitment-not-last", _with_outputs(decl, [*outs, TxOut(0, b"\x6a")])))
    out.append(
        (
            "height+1",
            build_declaration(
                dist,
                chain,
                decl.txs,
                decl.revenue - chain.subsidy(decl.height),
                height=decl.height + 1,
            ),
        )
    )
    tx = Tx.parse(decl.prefix + bytes(decl.extranonce_size) + decl.suffix)
    txin = tx.inputs[0]
    out.append(
        (
            "reserved-value",
            _resplit(
                decl,
                Tx(
                    tx.version,
                    (TxIn(txin.prevout, txin.script_sig, txin.sequence, (b"\x01" * 32,)),),
                    tx.outputs,
                    tx.locktime,
                ),
            ),
        )
    )
    return out


def test_every_single_field_tampering_is_rejected() -> None:
    async def scenario(chain: KernelChain, node: Any, srv: Any, c: JdClient) -> None:
        d = make_distribution(1, payees=5)
        tx = fee_tx(chain, 1, 12_345)
        node.add_mempool(tx)
        good = build_declaration(d, chain, [tx], fees=12_345)
        assert isinstance(await declare_decl(c, good), DeclareMiningJobSuccess)
        # A JDC-appended 0-value output before the commitment is allowed (PR #203 §4 item 4).
        outs = list(good.outputs)
        zero = _with_outputs(good, [*outs[:-1], TxOut(0, b"\x6a\x01\x00"), outs[-1]])
        assert isinstance(await declare_decl(c, zero), DeclareMiningJobSuccess)
        muts = mutations(good, d, chain)
        assert len(muts) > 200
        codes: dict[str, str] = {}
        for name, m in muts:
            reply = await declare_decl(c, m)
            assert isinstance(reply, DeclareMiningJobError), f"mutation {name} was accepted"
            codes[name] = reply.error_code
        # Total-preserving tampering is caught by the recompute-and-compare itself.
        for name in ("swap1", "shift1", "shift2", "remove2-to-pool", "extra-nonzero-from-pool"):
            assert codes[name] == "invalid-payout-distribution", (name, codes[name])
        assert codes["height+1"] == "stale-chain-tip"
        assert codes["out6.script[10]"] == "invalid-witness-commitment"
        assert codes["commitment-not-last"] == "invalid-witness-commitment"
        assert codes["reserved-value"] == "invalid-witness-commitment"
        assert codes["out0+1"] == "invalid-coinbase-value"
        assert isinstance(await declare_decl(c, good), DeclareMiningJobSuccess)

    run(scenario)
