"""The musig2 output and spends as pure functions: committee, tree, fee rule, determinism."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from payouts.crypto import musig2 as m
from payouts.crypto.taproot import TapLeaf, tapbranch_hash, tweak_pubkey
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.settlement.musig2.errors import WrongStateError
from payouts.settlement.musig2.output import (
    DEFAULT_FALLBACK_DELAY,
    KEYPATH_WITNESS,
    PLACEHOLDER_FUNDING,
    Committee,
    Musig2NonStandardError,
    Musig2Params,
    Musig2ParamsError,
    Musig2RevenueTooSmallError,
    NoCommitteeError,
    build_musig2_output,
    choose_committee,
    fallback_script,
    payout_split,
)
from payouts.settlement.musig2.session import SessionState
from payouts.settlement.musig2.spend import (
    Musig2SpendError,
    build_fallback_spend,
    cooperative_sighash,
    cooperative_spend,
    ctv_exit_spend,
    open_signing_session,
    sign_fallback_spend,
)
from payouts.tx.ctv import standard_template_hash
from payouts.tx.transaction import OutPoint
from payouts.tx.txout import TxOut

from .helpers import FALLBACK_SK, FALLBACK_XONLY, POOL_SCRIPT, World, params, run_session

T = 50 * 100_000_000
FUNDING = OutPoint(bytes(range(32)), 0)


# -- committee --------------------------------------------------------------------------------


def test_committee_is_the_largest_keyed_payees_in_keysort_order() -> None:
    w = World(n_keyed=30, n_plain=10)
    d = w.distribution
    c = choose_committee(d, w.registered, 12)
    assert len(c) == 12
    assert list(c.pubkeys) == m.key_sort(list(c.pubkeys))
    weight = {p.script: p.weight for p in d.payouts}
    keyed = sorted(w.registered, key=lambda s: (-weight[s], s))
    assert set(c.scripts) == set(keyed[:12])
    assert all(w.registered[s] == pk for s, pk in zip(c.scripts, c.pubkeys, strict=True))
    # every excluded keyed payee weighs no more than the lightest member
    lightest = min(weight[s] for s in c.scripts)
    assert all(weight[s] <= lightest for s in keyed[12:])
    # no bound hit: every keyed payee, unkeyed ones never
    assert set(choose_committee(d, w.registered).scripts) == set(w.registered)


def test_committee_does_not_depend_on_iteration_order() -> None:
    w = World(n_keyed=20, n_plain=5)
    d = w.distribution
    ref = choose_committee(d, w.registered, 8)
    rng = random.Random(1)
    for _ in range(5):
        items = list(w.registered.items())
        rng.shuffle(items)
        payees = list(d.payouts)
        rng.shuffle(payees)
        d2 = replace(d, payouts=tuple(payees))
        assert choose_committee(d2, dict(items), 8) == ref


def test_committee_weights_sum_per_script_and_one_slot_per_key() -> None:
    w = World(n_keyed=3, n_plain=0)
    d = w.distribution
    a, b, c = d.payouts
    # b's script appears twice: its weights add up and it ranks first
    d2 = replace(d, payouts=(a, b, c, Payee(b.script, 10_000, 330)))
    assert choose_committee(d2, w.registered, 1).scripts == (b.script,)
    # a and c registered the same key: one slot only
    reg = dict(w.registered)
    reg[c.script] = reg[a.script]
    assert len(choose_committee(d, reg)) == 2


def test_committee_errors() -> None:
    w = World(n_keyed=2)
    d = w.distribution
    with pytest.raises(NoCommitteeError):
        choose_committee(d, {})
    bad = {d.payouts[0].script: b"\x02" + b"\xff" * 32}
    with pytest.raises(Musig2ParamsError):
        choose_committee(d, bad)
    with pytest.raises(Musig2ParamsError):
        choose_committee(d, w.registered, 0)


# -- params and the fallback leaf -------------------------------------------------------------


def test_fallback_script_bytes() -> None:
    assert DEFAULT_FALLBACK_DELAY == 244
    s = fallback_script(244, FALLBACK_XONLY)
    # push of CScriptNum 244 (0xf4 0x00: sign bit), OP_CSV, OP_DROP, <32B>, OP_CHECKSIG
    assert s == bytes.fromhex("02f400b275") + b"\x20" + FALLBACK_XONLY + b"\xac"
    assert fallback_script(110, FALLBACK_XONLY)[:3] == bytes.fromhex("016eb2")


@pytest.mark.parametrize(
    "kw",
    [
        {"fallback_delay": 100},
        {"fallback_delay": 0x10000},
        {"fee_rate": 0},
        {"fee_rate": True},
        {"max_signers": 0},
    ],
)
def test_params_rejected(kw: dict[str, int]) -> None:
    with pytest.raises(Musig2ParamsError):
        Musig2Params(FALLBACK_XONLY, **kw)


def test_bad_fallback_key_rejected() -> None:
    with pytest.raises(Musig2ParamsError):
        Musig2Params(b"\xff" * 32)  # not an x coordinate on the curve (≥ p)
    with pytest.raises(Musig2ParamsError):
        Musig2Params(b"\x02" + FALLBACK_XONLY)


# -- the output -------------------------------------------------------------------------------


@pytest.mark.parametrize("ctv", [False, True])
def test_output_construction(ctv: bool) -> None:
    w = World(n_keyed=10)
    out = build_musig2_output(w.distribution, T, w.registered, params(), ctv_active=ctv)
    assert out.internal_key == m.key_agg(list(out.committee.pubkeys)).xonly_pubkey
    fb = TapLeaf(fallback_script(DEFAULT_FALLBACK_DELAY, FALLBACK_XONLY))
    assert out.fallback_leaf == fb
    if ctv:
        assert out.ctv_leaf is not None and out.template_hash is not None
        assert out.ctv_leaf.script == b"\x20" + out.template_hash + b"\xb3"
        assert out.merkle_root == tapbranch_hash(out.ctv_leaf.hash, fb.hash)
        assert len(out.control_block(fb)) == 33 + 32
        # BIP-119 does not commit to the outpoint: the hash holds for the bound tx
        assert standard_template_hash(out.payout_tx_for(FUNDING), 0) == out.template_hash
    else:
        assert out.ctv_leaf is None and out.template_hash is None
        assert out.merkle_root == fb.hash
        assert len(out.control_block(fb)) == 33
        with pytest.raises(Musig2SpendError):
            ctv_exit_spend(out, FUNDING)
    q, parity = tweak_pubkey(out.internal_key, out.merkle_root)
    assert (out.output_key, out.output_parity) == (q, parity)
    assert out.script_pubkey == b"\x51\x20" + q
    assert out.coinbase_outputs == (TxOut(T, out.script_pubkey),)
    assert out.payout_tx.inputs[0].prevout == PLACEHOLDER_FUNDING


def test_output_is_deterministic() -> None:
    """Same inputs, same bytes: what the JD client and server rely on (invariant 3)."""
    w = World(n_keyed=15, n_plain=4)
    a = build_musig2_output(w.distribution, T, w.registered, params(), ctv_active=True)
    shuffled = dict(reversed(list(w.registered.items())))
    b = build_musig2_output(w.distribution, T, shuffled, params(), ctv_active=True)
    assert a.coinbase_outputs == b.coinbase_outputs
    assert a.payout_tx.serialize() == b.payout_tx.serialize()
    assert a.merkle_root == b.merkle_root
    # and every committed parameter changes the output key
    keys = {a.output_key}
    for other in (
        build_musig2_output(w.distribution, T, w.registered, params(), ctv_active=False),
        build_musig2_output(
            w.distribution, T, w.registered, params(fallback_delay=245), ctv_active=True
        ),
        build_musig2_output(w.distribution, T, w.registered, params(fee_rate=2), ctv_active=True),
        build_musig2_output(w.distribution, T - 1, w.registered, params(), ctv_active=True),
        build_musig2_output(
            w.distribution, T, w.registered, params(max_signers=5), ctv_active=True
        ),
    ):
        keys.add(other.output_key)
    assert len(keys) == 6


def test_additional_outputs_stay_in_the_coinbase() -> None:
    w = World(n_keyed=4, additional=True)
    d = w.distribution
    d = replace(d, additional_outputs=(replace(d.additional_outputs[0], amount=1_000),))
    out = build_musig2_output(d, T, w.registered, params(), ctv_active=False)
    assert out.value == T - 1_000
    assert out.coinbase_outputs[1] == TxOut(1_000, d.additional_outputs[0].script)
    assert sum(o.value for o in out.coinbase_outputs) == T
    assert all(o.script != d.additional_outputs[0].script for o in out.payout_tx.outputs)


# -- fee rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 3, 57])
def test_fee_rule_is_rate_times_vsize_and_conserves(rate: int) -> None:
    w = World(n_keyed=12, n_plain=6)
    out = build_musig2_output(
        w.distribution, T, w.registered, params(fee_rate=rate), ctv_active=True
    )
    signed_shape = out.payout_tx_for(FUNDING, KEYPATH_WITNESS)
    assert out.split.vsize == signed_shape.vsize
    assert out.split.fee == rate * signed_shape.vsize
    assert sum(o.value for o in out.payout_tx.outputs) + out.split.fee == out.value
    # outputs: pool payout first, then payees in distribution order (PR #203 order)
    assert out.payout_tx.outputs[0].script == POOL_SCRIPT
    assert [o.script for o in out.payout_tx.outputs[1:]] == [
        p.script for p in w.distribution.payouts
    ]


def test_fee_rule_with_pruning_refunds_the_pool() -> None:
    """A payee pruned as dust shrinks the tx; the fee saved (F0 − F1) goes to the pool."""
    d = Distribution(
        1,
        PoolPayout(POOL_SCRIPT, 1),
        (
            Payee(b"\x51\x20" + b"\x01" * 32, 1_000_000, 330),
            Payee(b"\x51\x20" + b"\x02" * 32, 1, 0),
        ),
    )
    value = 2_000_000
    s = payout_split(d, value, 10)
    assert len(s.outputs) == 2  # payee 2 earns ~2 sat < 330 relay dust: pruned
    assert s.payout.pruned == (1,)
    assert s.fee == 10 * s.vsize
    f0 = 10 * (s.vsize + 43)  # the unpruned tx had one more P2TR output (43 vB)
    kept = 1_000_000 * (value - f0) // 1_000_002
    assert s.outputs[1].value == kept
    assert s.outputs[0].value == value - s.fee - kept


def test_revenue_too_small() -> None:
    w = World(n_keyed=3)
    with pytest.raises(Musig2RevenueTooSmallError):
        build_musig2_output(w.distribution, 200, w.registered, params(), ctv_active=False)
    with pytest.raises(Musig2RevenueTooSmallError):  # fee paid but the pool payout is dust
        build_musig2_output(w.distribution, 370, w.registered, params(), ctv_active=False)


# -- spends without a chain -------------------------------------------------------------------


def test_session_signs_the_output_key_and_fallback_needs_a_failed_session() -> None:
    w = World(n_keyed=5)
    out = build_musig2_output(w.distribution, T, w.registered, params(), ctv_active=True)
    s = open_signing_session(out, FUNDING, nonce_deadline=10, sig_deadline=20)
    assert s.msg == cooperative_sighash(out, FUNDING)
    assert s.output_key == out.output_key and s.internal_key == out.internal_key
    fb = build_fallback_spend(out, FUNDING)
    with pytest.raises(WrongStateError):  # still collecting nonces
        sign_fallback_spend(out, fb, FALLBACK_SK, session=s)
    with pytest.raises(WrongStateError):
        cooperative_spend(out, FUNDING, s)
    run_session(s, w.sks)
    assert s.state is SessionState.COMPLETE
    with pytest.raises(WrongStateError):  # complete: no fallback either
        sign_fallback_spend(out, fb, FALLBACK_SK, session=s)
    tx = cooperative_spend(out, FUNDING, s)
    assert tx.inputs[0].witness == (s.final_signature(),)
    # a session for another outpoint is not this spend's
    other = open_signing_session(out, OutPoint(bytes(32), 1), nonce_deadline=10, sig_deadline=20)
    with pytest.raises(Musig2SpendError):
        cooperative_spend(out, FUNDING, other)
    other.tick(11)
    with pytest.raises(Musig2SpendError):
        sign_fallback_spend(out, fb, FALLBACK_SK, session=other)


def test_fallback_refuses_a_foreign_key() -> None:
    w = World(n_keyed=2)
    out = build_musig2_output(w.distribution, T, w.registered, params(), ctv_active=False)
    s = open_signing_session(out, FUNDING, nonce_deadline=10, sig_deadline=20)
    s.tick(11)
    with pytest.raises(Musig2SpendError):
        sign_fallback_spend(out, build_fallback_spend(out, FUNDING), b"\x01" * 32, session=s)


def test_jd_client_rebuilds_the_same_output_from_the_wire_committee() -> None:
    """The JD client gets the committee keys (SetSettlementMode ``musig2_committee``), not the
    registry: it must reach the same bytes."""
    w = World(n_keyed=9)
    server = build_musig2_output(w.distribution, T, w.registered, params(), ctv_active=True)
    wire = Committee.from_pubkeys(list(server.committee.pubkeys))
    client = build_musig2_output(w.distribution, T, wire, params(), ctv_active=True)
    assert client.coinbase_outputs == server.coinbase_outputs
    assert client.payout_tx.serialize() == server.payout_tx.serialize()
    keys = list(server.committee.pubkeys)
    with pytest.raises(Musig2ParamsError):  # not KeySort order
        Committee.from_pubkeys(keys[::-1])
    with pytest.raises(Musig2ParamsError):  # duplicate
        Committee.from_pubkeys(sorted([keys[0], *keys]))
    with pytest.raises(Musig2ParamsError):  # does not parse
        Committee.from_pubkeys([b"\x05" + bytes(32)])
    with pytest.raises(NoCommitteeError):
        Committee.from_pubkeys([])
    with pytest.raises(Musig2ParamsError):  # over the bound
        build_musig2_output(w.distribution, T, wire, params(max_signers=3), ctv_active=True)


def test_payout_tx_over_standard_weight_is_refused() -> None:
    w = World(n_keyed=2, n_plain=0)
    d = w.distribution
    many = tuple(Payee(b"\x51\x20" + i.to_bytes(32, "big"), 1, 0) for i in range(1, 2_400))
    big = replace(d, payouts=d.payouts + many)
    with pytest.raises(Musig2NonStandardError):
        build_musig2_output(big, T, w.registered, params(), ctv_active=False)


def _payout_base_size(n_p2tr: int, n_p2wpkh: int) -> int:
    """Non-witness bytes of the payout tx with a P2WPKH pool payout and these payees (more
    than 252 outputs: a 3-byte output count)."""
    return 4 + 1 + 41 + 3 + 31 + 43 * n_p2tr + 31 * n_p2wpkh + 4


def _sized_distribution(base_size: int) -> Distribution:
    """Payees (P2TR, then P2WPKH, all kept at T) making the payout tx exactly ``base_size``
    bytes without witness."""
    for n_wpkh in range(43):
        rest = base_size - _payout_base_size(0, n_wpkh)
        if rest % 43 == 0:
            n_tr = rest // 43
            break
    payees = [Payee(b"\x51\x20" + i.to_bytes(32, "big"), 1, 0) for i in range(1, n_tr + 1)]
    payees += [Payee(b"\x00\x14" + i.to_bytes(20, "big"), 1, 0) for i in range(1, n_wpkh + 1)]
    assert _payout_base_size(n_tr, n_wpkh) == base_size
    return Distribution(1, PoolPayout(POOL_SCRIPT, 1), tuple(payees))


def test_standard_weight_is_checked_on_the_real_spends() -> None:
    """Spec §6.6: the key-path payout tx fits 400,000 WU (4 × 99,980 + 68), but its fallback
    spend (+142 WU of witness, +174 with the CTV leaf's longer control block) does not, nor its
    CTV exit (+104 WU): refused. 30 bytes less and every spend fits."""
    w = World(n_keyed=2, n_plain=0)
    committee = Committee.from_pubkeys(m.key_sort(list(w.registered.values())))
    tight = _sized_distribution(99_980)
    ok = _sized_distribution(99_950)
    for ctv in (False, True):
        with pytest.raises(Musig2NonStandardError) as e:
            build_musig2_output(tight, T, committee, params(), ctv_active=ctv)
        assert ("CTV exit" if ctv else "fallback spend") in e.value.message
        out = build_musig2_output(ok, T, committee, params(), ctv_active=ctv)
        assert out.split.vsize == 99_950 + 17  # the key path's 68 WU of witness: no rounding
        assert build_fallback_spend(out, FUNDING).tx.with_input_witness(
            0, (bytes(64), out.fallback_leaf.script, out.control_block(out.fallback_leaf))
        ).weight <= 400_000
        if ctv:
            assert ctv_exit_spend(out, FUNDING).weight <= 400_000


def test_sigop_dense_scripts_are_refused() -> None:
    """Spec §4.3: bare multisig carries 80 sigop-cost units in 46 bytes; P2PKH passes."""
    w = World(n_keyed=2, n_plain=0)
    d = w.distribution
    multisig = b"\x51\x21" + m.individual_pubkey(bytes(31) + b"\x01") + b"\x51\xae"
    dense = replace(d, payouts=(*d.payouts, Payee(multisig, 10, 546)))
    with pytest.raises(Musig2NonStandardError):
        build_musig2_output(dense, T, w.registered, params(), ctv_active=False)
    p2pkh = bytes.fromhex("76a914" + "11" * 20 + "88ac")
    fine = replace(d, payouts=(*d.payouts, Payee(p2pkh, 10, 546)))
    assert build_musig2_output(fine, T, w.registered, params(), ctv_active=False).split.fee > 0
