"""The musig2 output and its three spends judged by Bitcoin Core's consensus code
(libbitcoinkernel, in-memory regtest).

libbitcoinkernel does NOT implement BIP-119: inside tapscript OP_CHECKTEMPLATEVERIFY is OP_NOP4
there, so for the CTV exit it checks the taproot commitment (leaf, control block, output key),
amounts and maturity, and our own BIP-119 hash checks the template. It does enforce BIP-68 and
BIP-112 (the fallback's relative timelock) and BIP-341 key-path signatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from payouts.crypto import musig2 as m
from payouts.node.kernel_chain import BlockRejectedError, KernelChain
from payouts.settlement.musig2.errors import InvalidPartialSigError
from payouts.settlement.musig2.output import Musig2Output, build_musig2_output
from payouts.settlement.musig2.session import Blame, FailureReason, PartialSigCheck, SessionState
from payouts.settlement.musig2.spend import (
    build_fallback_spend,
    cooperative_spend,
    ctv_exit_spend,
    open_signing_session,
    sign_fallback_spend,
)
from payouts.tx.ctv import standard_template_hash
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

from .helpers import FALLBACK_SK, MINER, POOL_SCRIPT, World, params, run_session

DELAY = 110  # fallback n: 10 blocks of signing window after maturity keeps the tests quick
NONCE_DL, SIG_DL = 100.0, 200.0


@dataclass
class Funded:
    chain: KernelChain
    world: World
    out: Musig2Output
    funding: OutPoint
    coin_height: int


@pytest.fixture
def chain() -> Iterator[KernelChain]:
    with KernelChain() as c:
        yield c


def fund(chain: KernelChain, n_keyed: int, *, ctv: bool, fee_rate: int = 2) -> Funded:
    """Mine the coinbase paying the musig2 output, then 100 blocks: it is mature."""
    w = World(n_keyed=n_keyed, n_plain=4)
    revenue = chain.subsidy(chain.tip_height + 1)
    out = build_musig2_output(
        w.distribution,
        revenue,
        w.registered,
        params(fallback_delay=DELAY, fee_rate=fee_rate),
        ctv_active=ctv,
    )
    block = chain.mine_block(out.coinbase_outputs)
    coinbase = block.txs[0]
    assert coinbase.outputs[0] == out.txout
    height = chain.tip_height
    chain.mine_empty(100, MINER)
    return Funded(chain, w, out, OutPoint(coinbase.txid, 0), height)


def mine(chain: KernelChain, txs: list[Tx]) -> None:
    reward = chain.subsidy(chain.tip_height + 1) + chain.fees(txs)
    chain.mine_block([TxOut(reward, MINER)], txs)


def assert_paid(chain: KernelChain, tx: Tx, expected: tuple[TxOut, ...]) -> None:
    """Every payout output sits in the UTXO set with its exact amount."""
    assert tx.outputs == expected
    for n, o in enumerate(expected):
        assert chain.utxos[OutPoint(tx.txid, n)] == (o, chain.tip_height, False)


@pytest.mark.parametrize(("n_keyed", "ctv"), [(10, False), (30, True), (50, False)])
def test_cooperative_keypath_spend_is_accepted(chain: KernelChain, n_keyed: int, ctv: bool) -> None:
    f = fund(chain, n_keyed, ctv=ctv)
    s = open_signing_session(f.out, f.funding, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL)
    assert s.n_signers == n_keyed
    run_session(s, f.world.sks, now=1.0)
    assert s.state is SessionState.COMPLETE
    tx = cooperative_spend(f.out, f.funding, s)
    assert len(tx.inputs[0].witness) == 1 and len(tx.inputs[0].witness[0]) == 64
    assert chain.verify_spend(tx)
    # the fee rule holds for the real signed tx: rate × vsize, exactly
    assert chain.fees([tx]) == f.out.split.fee == 2 * tx.vsize
    mine(chain, [tx])
    assert_paid(chain, tx, f.out.split.outputs)
    assert len(tx.outputs) == 1 + n_keyed + 4  # pool payout + every payee
    assert tx.outputs[0].script == POOL_SCRIPT
    assert sum(o.value for o in tx.outputs) + f.out.split.fee == chain.subsidy(1)


def test_hundred_signer_committee(chain: KernelChain) -> None:
    f = fund(chain, 100, ctv=True)
    s = open_signing_session(f.out, f.funding, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL)
    run_session(s, f.world.sks)
    tx = cooperative_spend(f.out, f.funding, s)
    mine(chain, [tx])
    assert_paid(chain, tx, f.out.split.outputs)


def test_tampered_partial_signature_is_blamed_then_fallback(chain: KernelChain) -> None:
    """A bad psig is rejected on arrival, blaming its signer; if that signer never sends a good
    one, the deadline fails the session with that blame, and the fallback takes over."""
    f = fund(chain, 20, ctv=False)
    s = open_signing_session(f.out, f.funding, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL,
                             psig_check=PartialSigCheck.ON_ARRIVAL)
    bad = 7
    secnonces = {}
    for i, pk in enumerate(s.pubkeys):
        sn, pn = m.nonce_gen(f.world.sks[pk], pk, s.keyagg, s.msg)
        secnonces[i] = sn
        s.add_nonce(i, pn, 1.0)
    ctx = s.session_context
    assert ctx is not None
    for i, pk in enumerate(s.pubkeys):
        psig = m.partial_sign(secnonces[i], f.world.sks[pk], ctx)
        if i == bad:
            tampered = bytes([psig[0] ^ 1]) + psig[1:]
            with pytest.raises(InvalidPartialSigError) as e:
                s.add_partial_sig(i, tampered, 2.0)
            assert e.value.signer_index == bad
            assert s.state is SessionState.COLLECTING_PARTIAL_SIGS  # others unaffected
            continue
        s.add_partial_sig(i, psig, 2.0)
    assert s.missing_partial_sigs == (bad,)
    assert s.tick(SIG_DL + 1) is SessionState.FAILED
    assert s.failure is not None and s.failure.reason is FailureReason.SIGNATURE_DEADLINE
    assert dict(s.failure.blame) == {bad: Blame.INVALID_PARTIAL_SIG}
    assert s.failed_signers == (bad,)
    chain.mine_empty(DELAY - 100, MINER)  # fallback window open
    fb = sign_fallback_spend(f.out, build_fallback_spend(f.out, f.funding), FALLBACK_SK, session=s)
    mine(chain, [fb])
    assert_paid(chain, fb, build_fallback_spend(f.out, f.funding).outputs)


def test_tampered_final_signature_is_rejected_by_the_kernel(chain: KernelChain) -> None:
    f = fund(chain, 12, ctv=True)
    s = open_signing_session(f.out, f.funding, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL)
    run_session(s, f.world.sks)
    good = cooperative_spend(f.out, f.funding, s)
    sig = good.inputs[0].witness[0]
    bad = good.with_input_witness(0, (sig[:63] + bytes([sig[63] ^ 1]),))
    assert not chain.verify_spend(bad)
    tip = chain.tip_hash
    with pytest.raises(BlockRejectedError) as e:
        mine(chain, [bad])
    assert "script-verify-flag-failed" in e.value.reason
    assert chain.tip_hash == tip
    # a signature for another message (amount changed) fails too
    outs = list(good.outputs)
    outs[0] = TxOut(outs[0].value - 1, outs[0].script)
    moved = Tx(good.version, good.inputs, tuple(outs), good.locktime)
    assert not chain.verify_spend(moved)
    mine(chain, [good])  # the honest tx still goes in
    assert_paid(chain, good, f.out.split.outputs)


@pytest.mark.parametrize("ctv", [False, True])
def test_lazy_signer_times_out_and_fallback_waits_for_n_blocks(
    chain: KernelChain, ctv: bool
) -> None:
    f = fund(chain, 15, ctv=ctv)
    s = open_signing_session(f.out, f.funding, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL)
    lazy = 3
    run_session(s, f.world.sks, now=5.0, skip_nonce=frozenset({lazy}))
    assert s.state is SessionState.COLLECTING_NONCES
    assert s.tick(NONCE_DL) is SessionState.COLLECTING_NONCES  # on time at the deadline
    assert s.tick(NONCE_DL + 0.5) is SessionState.FAILED
    assert s.failure is not None and s.failure.reason is FailureReason.NONCE_DEADLINE
    assert dict(s.failure.blame) == {lazy: Blame.NO_NONCE}

    spend = build_fallback_spend(f.out, f.funding)
    fb = sign_fallback_spend(f.out, spend, FALLBACK_SK, session=s)
    assert fb.inputs[0].sequence == DELAY and fb.version == 2
    assert len(fb.inputs[0].witness) == 3
    assert chain.verify_spend(fb)  # the script (CSV vs nSequence) is satisfied...
    assert chain.fees([fb]) == spend.fee == 2 * fb.vsize
    first = spend.valid_from_height(f.coin_height)
    assert first == f.coin_height + DELAY
    # ...but BIP-68 keeps it out of any block before coin height + n
    chain.mine_empty(first - 1 - chain.tip_height - 1, MINER)
    assert chain.tip_height + 1 == first - 1
    tip = chain.tip_hash
    with pytest.raises(BlockRejectedError) as e:
        mine(chain, [fb])
    assert e.value.reason == "bad-txns-nonfinal"
    assert chain.tip_hash == tip
    mine(chain, [])
    mine(chain, [fb])  # block coin height + n: accepted
    assert chain.tip_height == first
    assert_paid(chain, fb, spend.outputs)
    # every payee's amount differs from the cooperative one only by the larger fee
    assert sum(o.value for o in fb.outputs) + spend.fee == f.out.value


def test_fallback_with_a_short_nsequence_fails_csv(chain: KernelChain) -> None:
    """OP_CHECKSEQUENCEVERIFY itself (BIP-112) rejects nSequence < n, whatever the height."""
    f = fund(chain, 4, ctv=False)
    s = open_signing_session(f.out, f.funding, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL)
    s.tick(NONCE_DL + 1)
    fb = sign_fallback_spend(f.out, build_fallback_spend(f.out, f.funding), FALLBACK_SK, session=s)
    old = fb.inputs[0]
    short = Tx(fb.version, (TxIn(old.prevout, b"", DELAY - 1, old.witness),), fb.outputs)
    assert not chain.verify_spend(short)


def test_fallback_to_the_holder(chain: KernelChain) -> None:
    f = fund(chain, 4, ctv=True)
    s = open_signing_session(f.out, f.funding, nonce_deadline=NONCE_DL, sig_deadline=SIG_DL)
    s.abort(1.0, "operator")
    spend = build_fallback_spend(f.out, f.funding, pay_to=POOL_SCRIPT)
    fb = sign_fallback_spend(f.out, spend, FALLBACK_SK, session=s)
    chain.mine_empty(DELAY - 101, MINER)
    mine(chain, [fb])
    assert fb.outputs == (TxOut(f.out.value - 2 * fb.vsize, POOL_SCRIPT),)
    assert spend.payout is None and spend.fee == 2 * fb.vsize == spend.vsize * 2
    assert_paid(chain, fb, spend.outputs)


def test_ctv_exit_structure_accepted_and_hash_matches(chain: KernelChain) -> None:
    """The unilateral exit: no signature, just the leaf and its control block."""
    f = fund(chain, 8, ctv=True)
    tx = ctv_exit_spend(f.out, f.funding)
    assert f.out.ctv_leaf is not None
    assert tx.inputs[0].witness == (f.out.ctv_leaf.script, f.out.control_block(f.out.ctv_leaf))
    # our BIP-119 check, which the kernel cannot do: the tx is exactly the committed template
    assert standard_template_hash(tx, 0) == f.out.template_hash
    assert tx.txid == f.out.payout_tx_for(f.funding).txid  # same tx as the cooperative one
    assert chain.verify_spend(tx)
    # the kernel does NOT enforce CTV: a thief's tx with the same witness passes its scripts,
    # and only the BIP-119 hash (i.e. a CTV-enforcing node) catches it
    thief = Tx(tx.version, tx.inputs, (TxOut(f.out.value - 1_000, MINER),), tx.locktime)
    assert chain.verify_spend(thief)
    assert standard_template_hash(thief, 0) != f.out.template_hash
    # a control block for the wrong leaf position fails taproot verification
    cb = f.out.control_block(f.out.ctv_leaf)
    broken = tx.with_input_witness(0, (f.out.ctv_leaf.script, cb[:33] + bytes(32)))
    assert not chain.verify_spend(broken)
    mine(chain, [tx])
    assert_paid(chain, tx, f.out.split.outputs)
