"""Extension 0x4003: SetSettlementMode bytes, the ctv mode validated against build_ctv_fanout
(and accepted by the kernel, which treats OP_CTV as OP_NOP4), and musig2 rebuilt from the
wire fields alone."""

from __future__ import annotations

import asyncio

import pytest

from payouts.crypto.musig2 import individual_pubkey, key_sort
from payouts.crypto.schnorr import xonly_pubkey
from payouts.errors import ValidationError
from payouts.node.kernel_chain import KernelChain
from payouts.settlement.ctv import CtvParams, build_ctv_fanout
from payouts.tx.hashes import sha256
from sv2.jds import Musig2Mode, SettlementMode, distribution_from_message
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
        "034000470000070000000000000000" + "00" * 62
    )
    assert CTV.to_message(9).encode_frame().hex() == (
        "034000470000"
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
        "00000000" + "00" * 32 + "00000000" + "00"
    )
    mu2 = SettlementMode(
        "musig2",
        musig2=Musig2Mode(
            (b"\x02" + b"\x11" * 32, b"\x03" + b"\x22" * 32), 144, b"\x44" * 32, 2, False
        ),
    )
    assert mu2.to_message(10).encode_frame().hex() == (
        "034000890000"
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
        "02" + "11" * 32 + "03" + "22" * 32 + "90000000" + "44" * 32 + "02000000" + "00"
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
        "musig2", musig2=Musig2Mode((b"\x02" + bytes(32),) * 2, 144, b"\x05" * 32)
    )
    mm = mu.to_message(10)
    assert len(mm.encode()) == 8 + 1 + 2 + 1 + 1 + 4 * 4 + 1 + 2 * 33 + 4 + 32 + 4 + 1
    assert SettlementMode.from_message(mm) == mu
    with pytest.raises(ValidationError):
        SettlementMode.from_message(
            SetSettlementMode(1, 9, 0, 0, False, 0, 0, 0, 0, (), 0, bytes(32), 0, False)
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


def test_musig2_mode_is_rebuilt_from_the_wire() -> None:
    """The musig2 output is fully determined by SetSettlementMode (committee, fallback, fee
    rate, CTV-leaf flag): the server validates with the same builder a client uses."""
    sks = [sha256(b"jds musig2 signer %d" % i) for i in range(3)]
    committee = tuple(key_sort([individual_pubkey(sk) for sk in sks]))
    fallback = xonly_pubkey(sha256(b"jds musig2 fallback"))

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = KernelTestNode(chain)
            mu = SettlementMode("musig2", musig2=Musig2Mode(committee, 144, fallback, 2, False))
            srv = await start_server(node)
            srv.publish(make_distribution(2), mode=mu)
            c = await JdClient.connect(srv.address)
            try:
                await c.setup()
                await c.expect(SetPayoutDistribution)
                assert SettlementMode.from_message(await c.expect(SetSettlementMode)) == mu
                t = chain.subsidy(chain.tip_height + 1)
                assert mu.musig2 is not None
                good = list(mu.musig2.build(make_distribution(2), t).coinbase_outputs)
                assert good[0].script[:2] == b"\x51\x20" and good[0].value == t
                other = Musig2Mode(committee[:2], 144, fallback, 2, False)
                bad = list(other.build(make_distribution(2), t).coinbase_outputs)
                for outputs, ok in ((bad, False), (good, True)):
                    decl = build_declaration(make_distribution(), chain, payout_outputs=outputs)
                    tok = await c.token()
                    c.send(decl.message(tok.mining_job_token, dist_id=2))
                    reply = await c.recv()
                    if ok:
                        assert isinstance(reply, DeclareMiningJobSuccess)
                    else:
                        assert isinstance(reply, DeclareMiningJobError)
                        assert reply.error_code == "invalid-settlement-outputs"
            finally:
                c.close()
                await srv.stop()

    asyncio.run(main())
