"""Extension 0x4003: SetSettlementMode bytes, the ctv mode validated against build_ctv_fanout
(and accepted by the kernel, which treats OP_CTV as OP_NOP4), and musig2 rebuilt from the
wire fields alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from payouts.crypto.musig2 import individual_pubkey, key_sort
from payouts.crypto.schnorr import xonly_pubkey
from payouts.errors import ValidationError
from payouts.node.kernel_chain import KernelChain
from payouts.settings import Settings
from payouts.settlement.ctv import CtvNotActiveError, CtvParams, build_ctv_fanout
from payouts.settlement.modes import Musig2Mode, SettlementMode
from payouts.tx.hashes import sha256
from sv2.domain_messages import distribution_from_message, mode_from_message, mode_to_message
from sv2.errors import EncodeError
from sv2.jds import JobDeclarationServer
from sv2.messages import (
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    SetPayoutDistribution,
    SetSettlementMode,
    decode_frame,
)
from tests.jds.helpers import (
    IDENTITY,
    CtvClaimingKernelNode,
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
    assert mode_to_message(SettlementMode(), 7).encode_frame().hex() == (
        "034000470000070000000000000000" + "00" * 62
    )
    assert mode_to_message(CTV, 9).encode_frame().hex() == (
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
    # Committee and fallback keys are real curve points (the decoder refuses anything else,
    # 0x4003 §3.3): the keys of the example secrets 1, 2 (KeySort order) and 3.
    g1 = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    g2 = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
    x3 = "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
    mu2 = SettlementMode(
        "musig2",
        musig2=Musig2Mode((bytes.fromhex(g1), bytes.fromhex(g2)), 144, bytes.fromhex(x3), 2),
    )
    assert mode_to_message(mu2, 10).encode_frame().hex() == (
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
        "" + g1 + g2 + "90000000" + x3 + "02000000" + "00"
    )
    m = mode_to_message(CTV, 9)
    assert (m.mode, m.ctv_arity, m.ctv_output_form, m.ctv_anchor, m.ctv_fee_rate) == (
        1,
        4,
        1,
        True,
        2,
    )
    assert decode_frame(m.encode_frame())[1] == m
    assert mode_from_message(m) == CTV
    keys = (bytes.fromhex(g1), bytes.fromhex(g2))
    mu = SettlementMode("musig2", musig2=Musig2Mode(keys, 144, bytes.fromhex(x3)))
    mm = mode_to_message(mu, 10)
    assert len(mm.encode()) == 8 + 1 + 2 + 1 + 1 + 4 * 4 + 1 + 2 * 33 + 4 + 32 + 4 + 1
    assert mode_from_message(mm) == mu
    with pytest.raises(ValidationError):
        mode_from_message(
            SetSettlementMode(1, 9, 0, 0, False, 0, 0, 0, 0, (), 0, bytes(32), 0, False)
        )


def test_ctv_mode_declare_and_block() -> None:
    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            # Claims CTV so the ctv-mode JDS starts; the kernel does not enforce CTV, so this
            # tests the codec and the declaration check, not a fan-out's enforcement.
            node = CtvClaimingKernelNode(chain)
            srv = await start_server(node, make_distribution(1, payees=12), mode=CTV)
            c = await JdClient.connect(srv.address)
            plain = await JdClient.connect(srv.address)
            try:
                await c.setup()
                d = distribution_from_message(await c.expect(SetPayoutDistribution))
                mode = mode_from_message(await c.expect(SetSettlementMode))
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
                assert mode_from_message(await c.expect(SetSettlementMode)) == mu
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


def _musig2_mode(ctv_leaf: bool) -> SettlementMode:
    sks = [sha256(b"jds musig2 ctv-leaf signer %d" % i) for i in range(2)]
    committee = tuple(key_sort([individual_pubkey(sk) for sk in sks]))
    fallback = xonly_pubkey(sha256(b"jds musig2 ctv-leaf fallback"))
    return SettlementMode("musig2", musig2=Musig2Mode(committee, 144, fallback, 1, ctv_leaf))


@pytest.mark.parametrize("mode", [CTV, _musig2_mode(True)], ids=["ctv", "musig2-ctv-leaf"])
def test_a_mode_needing_ctv_is_refused_on_a_node_without_it(mode: SettlementMode) -> None:
    """ARCHITECTURE invariant 4: a JDS whose mode relies on CTV (a ctv commitment, or musig2
    with the CTV exit leaf) does not start on a node that does not report checktemplateverify
    active (the kernel node, Bitcoin Core): nothing listens, nothing is published."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            srv = JobDeclarationServer(
                identity=IDENTITY,
                node=KernelTestNode(chain),  # type: ignore[arg-type]
                distribution_source=make_distribution(),
                mode=mode,
            )
            with pytest.raises(CtvNotActiveError) as e:
                await srv.start()
            assert e.value.code == "ctv-not-active"
            assert "anyone-can-spend" in e.value.message and "not report" in e.value.message
            assert srv.book.current is None and srv.ctv_active is False
            with pytest.raises(RuntimeError, match="not started"):
                _ = srv.address
            await srv.stop()
            # The same mode on a node that reports CTV active starts.
            ok = await start_server(CtvClaimingKernelNode(chain), mode=mode)
            try:
                assert ok.ctv_active is True and ok.book.current is not None
                assert ok.book.current.mode == mode
            finally:
                await ok.stop()

    asyncio.run(main())


def test_from_settings_in_ctv_mode_is_refused_without_ctv(tmp_path: Path) -> None:
    """``distribution.mode = ctv`` from the settings: the same refusal at start()."""
    settings = Settings(
        data_dir=tmp_path,
        distribution={"mode": "ctv", "ctv_fanout_arity": 4},
        jds={"listen": "127.0.0.1:0"},
    )

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            srv = JobDeclarationServer.from_settings(
                settings, KernelTestNode(chain), make_distribution(), identity=IDENTITY
            )
            assert srv.default_mode == SettlementMode("ctv", CtvParams(arity=4))
            with pytest.raises(CtvNotActiveError):
                await srv.start()
            assert srv.book.current is None
            await srv.stop()

    asyncio.run(main())


def test_publish_of_a_mode_needing_ctv_is_refused_and_changes_nothing() -> None:
    """A coinbase-mode JDS on a node without CTV: publishing a ctv (or musig2 CTV-leaf)
    distribution raises and leaves the current distribution and the clients untouched; the
    musig2 mode without the leaf is published."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            srv = await start_server(KernelTestNode(chain))
            c = await JdClient.connect(srv.address)
            try:
                await c.setup()
                await c.expect(SetPayoutDistribution)
                await c.expect(SetSettlementMode)
                before = srv.book.current
                for mode in (CTV, _musig2_mode(True)):
                    with pytest.raises(CtvNotActiveError):
                        srv.publish(make_distribution(2), mode=mode)
                    assert srv.book.current is before
                # A mode the 0x4003 message cannot carry (committee not in KeySort order, docs/
                # extensions §6) is refused before anything changes, with its named error.
                m = _musig2_mode(False).musig2
                assert m is not None
                unsorted = SettlementMode("musig2", musig2=Musig2Mode(
                    m.committee[::-1], m.fallback_timelock, m.fallback_key, 1, False))
                with pytest.raises(EncodeError, match="not strictly ascending"):
                    srv.publish(make_distribution(2), mode=unsorted)
                assert srv.book.current is before
                plain = _musig2_mode(False)
                srv.publish(make_distribution(2), mode=plain)
                # The refused publishes pushed nothing: the next push is distribution 2's.
                assert (await c.expect(SetPayoutDistribution)).distribution_id == 2
                assert mode_from_message(await c.expect(SetSettlementMode)) == plain
            finally:
                c.close()
                await srv.stop()

    asyncio.run(main())
