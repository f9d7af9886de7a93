"""Extension 0x4003: SetSettlementMode bytes, the ctv mode validated against build_ctv_fanout
(and accepted by the kernel, which treats OP_CTV as OP_NOP4), musig2 needing a builder."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payouts.distribution.model import Distribution, TxOut
from payouts.errors import ValidationError
from payouts.node.kernel_chain import KernelChain
from payouts.settlement.ctv import CtvParams, build_ctv_fanout
from sv2.jds import Musig2Params, SettlementMode, distribution_from_message
from sv2.messages import (
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    SetPayoutDistribution,
    SetSettlementMode,
    decode_frame,
)
from tests.jds.helpers import (
    JdClient,
    KernelTestNode,
    build_declaration,
    make_distribution,
    setup_chain,
    solve_push,
    start_server,
)

CTV = SettlementMode("ctv", CtvParams(arity=4, form="taproot", anchor=True, fee_rate=2))


def test_set_settlement_mode_bytes_and_round_trip() -> None:
    # Byte examples of docs/extensions/0x4003-settlement-modes.md §5.
    assert SettlementMode().to_message(7).encode_frame().hex() == (
        "034000420000070000000000000000" + "00" * 57
    )
    assert CTV.to_message(9).encode_frame().hex() == (
        "034000420000"
        "0900000000000000"
        "01"
        "0400"
        "01"
        "01"
        "02000000"
        "00000000"
        "ffffffff"
        "00000000"
        "00"
        "00000000" + "00" * 32
    )
    mu2 = SettlementMode(
        "musig2",
        musig2=Musig2Params((b"\x02" + b"\x11" * 32, b"\x03" + b"\x22" * 32), 144, b"\x44" * 32),
    )
    assert mu2.to_message(10).encode_frame().hex() == (
        "034000840000"
        "0a00000000000000"
        "02"
        "0000"
        "00"
        "00"
        "00000000"
        "00000000"
        "00000000"
        "00000000"
        "02"
        "02" + "11" * 32 + "03" + "22" * 32 + "90000000" + "44" * 32
    )
    m = CTV.to_message(9)
    assert (m.mode, m.ctv_arity, m.ctv_output_form, m.ctv_anchor, m.ctv_fee_rate) == (
        1,
        4,
        1,
        True,
        2,
    )
    assert decode_frame(m.encode_frame())[1] == m
    assert SettlementMode.from_message(m) == CTV
    mu = SettlementMode(
        "musig2", musig2=Musig2Params((b"\x02" + bytes(32),) * 2, 144, b"\x05" * 32)
    )
    mm = mu.to_message(10)
    assert len(mm.encode()) == 8 + 1 + 2 + 1 + 1 + 4 * 4 + 1 + 2 * 33 + 4 + 32
    assert SettlementMode.from_message(mm) == mu
    with pytest.raises(ValidationError):
        SettlementMode.from_message(
            SetSettlementMode(1, 9, 0, 0, False, 0, 0, 0, 0, (), 0, bytes(32))
        )


def test_ctv_mode_declare_and_block() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            srv = await start_server(node, make_distribution(1, payees=12), mode=CTV)
            c = await JdClient.connect(srv.address)
            plain = await JdClient.connect(srv.address)
            try:
                await c.setup()
                d = distribution_from_message(await c.expect(SetPayoutDistribution))
                mode = SettlementMode.from_message(await c.expect(SetSettlementMode))
                assert mode == CTV
                t = chain.subsidy(chain.tip_height + 1)
                outs = build_ctv_fanout(d, t, mode.ctv).coinbase_outputs
                assert len(outs) == 1 and outs[0].value == t
                decl = build_declaration(d, chain, payout_outputs=outs)
                tok = await c.token()
                c.send(decl.message(tok.mining_job_token))
                assert isinstance(await c.recv(), DeclareMiningJobSuccess)
                # The coinbase-mode outputs are not what this distribution settles to.
                wrong = build_declaration(d, chain)
                tok = await c.token()
                c.send(wrong.message(tok.mining_job_token))
                err = await c.expect(DeclareMiningJobError)
                assert err.error_code == "invalid-settlement-outputs"
                # Nor is a commitment to another tree.
                other = build_ctv_fanout(d, t, CtvParams(arity=4, form="bare", fee_rate=2))
                tok = await c.token()
                c.send(
                    build_declaration(d, chain, payout_outputs=other.coinbase_outputs).message(
                        tok.mining_job_token
                    )
                )
                assert (await c.expect(DeclareMiningJobError)).error_code == (
                    "invalid-settlement-outputs"
                )
                # A 0x0003-only client cannot settle a ctv distribution.
                await plain.setup(extensions=(0x0003,))
                await plain.expect(SetPayoutDistribution)
                tok = await plain.token()
                plain.send(decl.message(tok.mining_job_token))
                assert (await plain.expect(DeclareMiningJobError)).error_code == (
                    "settlement-mode-not-negotiated"
                )
                # The block is valid for the kernel (which does not enforce CTV itself).
                tok = await c.token()
                c.send(decl.message(tok.mining_job_token))
                assert isinstance(await c.recv(), DeclareMiningJobSuccess)
                tip = await node.tip()
                c.send(solve_push(decl, tip.block_hash, tip.time + 1))
                for _ in range(200):
                    if srv.found_blocks:
                        break
                    await asyncio.sleep(0.01)
                fb = srv.found_blocks[0]
                assert fb.job.mode == "ctv" and chain.tip_hash == fb.block_hash
                assert fb.coinbase.outputs[0] == outs[0]
            finally:
                c.close()
                plain.close()
                await srv.stop()

    asyncio.run(main())


def test_musig2_needs_a_builder() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            mu = SettlementMode(
                "musig2", musig2=Musig2Params((b"\x02" + b"\x11" * 32,), 144, b"\x22" * 32)
            )
            srv = await start_server(node)
            with pytest.raises(ValidationError, match="musig2"):
                srv.publish(make_distribution(2), mode=mu)
            await srv.stop()
            key_out = TxOut(0, b"\x51\x20" + b"\x33" * 32)
            calls: list[Any] = []

            def expected(mode: SettlementMode, d: Distribution, t: int) -> list[TxOut]:
                calls.append((mode.name, d.distribution_id, t))
                return [TxOut(t, key_out.script)]

            srv = await start_server(node, expected_outputs=expected)
            srv.publish(make_distribution(2), mode=mu)
            c = await JdClient.connect(srv.address)
            try:
                await c.setup()
                await c.expect(SetPayoutDistribution)
                assert SettlementMode.from_message(await c.expect(SetSettlementMode)) == mu
                t = chain.subsidy(chain.tip_height + 1)
                decl = build_declaration(
                    make_distribution(), chain, payout_outputs=[TxOut(t, key_out.script)]
                )
                tok = await c.token()
                c.send(decl.message(tok.mining_job_token, dist_id=2))
                assert isinstance(await c.recv(), DeclareMiningJobSuccess)
                assert ("musig2", 2, t) in calls
            finally:
                c.close()
                await srv.stop()

    asyncio.run(main())
