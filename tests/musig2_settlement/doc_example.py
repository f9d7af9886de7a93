"""The worked example of docs/musig2.md, computed by the code (test_docs.py keeps them equal).

Run ``python -m tests.musig2_settlement.doc_example`` to print the values.
"""

from __future__ import annotations

from payouts.crypto import musig2 as m
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.settlement.musig2.output import Musig2Output, build_musig2_output
from payouts.settlement.musig2.spend import (
    build_fallback_spend,
    cooperative_sighash,
    cooperative_spend,
    ctv_exit_spend,
    fallback_sighash,
    open_signing_session,
)
from payouts.tx.hashes import sha256
from payouts.tx.transaction import OutPoint

from .helpers import POOL_SCRIPT, p2tr_of, params, payee_sk

REVENUE = 312_512_345  # subsidy 3.125 BTC + 12,345 sat of fees
FUNDING = OutPoint(sha256(b"example coinbase txid"), 0)


def example_output() -> tuple[Musig2Output, dict[bytes, bytes]]:
    sks = [payee_sk(i) for i in range(4)]
    payees = tuple(
        Payee(p2tr_of(sk), w, 330) for sk, w in zip(sks, (3000, 2000, 1000, 500), strict=True)
    )
    dist = Distribution(1, PoolPayout(POOL_SCRIPT, 1000), payees)
    registered = {p2tr_of(sk): m.individual_pubkey(sk) for sk in sks[:3]}  # payee 3: no key
    out = build_musig2_output(dist, REVENUE, registered, params(fee_rate=2), ctv_active=True)
    by_pk = {m.individual_pubkey(sk): sk for sk in sks[:3]}
    return out, by_pk


def example() -> dict[str, str]:
    out, by_pk = example_output()
    s = open_signing_session(out, FUNDING, nonce_deadline=60, sig_deadline=120)
    secnonces = []
    for i, pk in enumerate(s.pubkeys):
        # fixed rand: TEST ONLY, so the doc's signature is reproducible (never in production)
        sn, pn = m.nonce_gen(by_pk[pk], pk, s.keyagg, s.msg, rand=sha256(b"doc nonce" + bytes([i])))
        secnonces.append(sn)
        s.add_nonce(i, pn, 1)
    ctx = s.session_context
    assert ctx is not None
    for i, pk in enumerate(s.pubkeys):
        s.add_partial_sig(i, m.partial_sign(secnonces[i], by_pk[pk], ctx), 2)
    signed = cooperative_spend(out, FUNDING, s)
    fb = build_fallback_spend(out, FUNDING)
    assert out.ctv_leaf is not None and out.template_hash is not None
    v: dict[str, str] = {
        "committee_0": out.committee.pubkeys[0].hex(),
        "committee_1": out.committee.pubkeys[1].hex(),
        "committee_2": out.committee.pubkeys[2].hex(),
        "internal_key": out.internal_key.hex(),
        "fallback_leaf": out.fallback_leaf.script.hex(),
        "fallback_leaf_hash": out.fallback_leaf.hash.hex(),
        "template_hash": out.template_hash.hex(),
        "ctv_leaf": out.ctv_leaf.script.hex(),
        "ctv_leaf_hash": out.ctv_leaf.hash.hex(),
        "merkle_root": out.merkle_root.hex(),
        "output_key": out.output_key.hex(),
        "parity": str(out.output_parity),
        "script_pubkey": out.script_pubkey.hex(),
        "value": str(out.value),
        "fee": str(out.split.fee),
        "vsize": str(out.split.vsize),
        "sighash": cooperative_sighash(out, FUNDING).hex(),
        "final_sig": signed.inputs[0].witness[0].hex(),
        "signed_tx": signed.serialize().hex(),
        "ctv_control_block": out.control_block(out.ctv_leaf).hex(),
        "fallback_control_block": out.control_block(out.fallback_leaf).hex(),
        "ctv_exit_tx": ctv_exit_spend(out, FUNDING).serialize().hex(),
        "fallback_fee": str(fb.fee),
        "fallback_sighash": fallback_sighash(out, fb.tx).hex(),
    }
    for i, o in enumerate(out.split.outputs):
        v[f"amount_{i}"] = str(o.value)
    return v


if __name__ == "__main__":  # pragma: no cover
    for k, val in example().items():
        print(f"{k}: {val}")
