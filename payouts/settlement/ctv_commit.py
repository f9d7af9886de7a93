"""CTV commitment outputs in the two forms the ``ctv`` settlement mode emits, and their spends.

* ``bare``: ``<32B StandardTemplateHash> OP_CHECKTEMPLATEVERIFY`` as the scriptPubKey (BIP-119's
  own form; inquisition ``TX_BARE_DEFAULT_CTV_HASH``); spent with an empty scriptSig and no
  witness (41 bytes).
* ``taproot``: P2TR whose internal key is BIP-341's NUMS point H (no one knows its discrete
  log, so there is no key path) and whose only leaf (version 0xc0) is ``<hash> OP_CTV``; spent
  by revealing the leaf and its 33-byte control block (72 WU of witness with marker and flag).

Either way the output can only be spent by the tx whose BIP-119 hash it holds *where CTV is
enforced*; elsewhere both are anyone-can-spend (ARCHITECTURE invariant 4).
"""

from __future__ import annotations

from typing import Literal

from payouts.crypto.taproot import TAPSCRIPT_LEAF_VERSION, p2tr_script, tweak_pubkey
from payouts.tx.ctv import ctv_script, ctv_tapleaf, parse_ctv_script, standard_template_hash
from payouts.tx.transaction import Tx

# BIP-341's "nothing up my sleeve" point H = lift_x(SHA256(G)): no one knows its discrete log,
# so a P2TR output with this internal key can only be spent through its script leaf.
NUMS_H = bytes.fromhex("50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0")

Form = Literal["bare", "taproot"]
FORMS: tuple[Form, ...] = ("bare", "taproot")


def commitment_script(template_hash: bytes, form: Form) -> bytes:
    """The scriptPubKey committing to ``template_hash``: bare ``<32B> OP_CTV`` or P2TR(H, leaf)."""
    if form == "bare":
        return ctv_script(template_hash)
    out_key, _ = tweak_pubkey(NUMS_H, ctv_tapleaf(template_hash).hash)
    return p2tr_script(out_key)


def commitment_witness(template_hash: bytes, form: Form) -> tuple[bytes, ...]:
    """Witness of the input spending a commitment: none (bare) or [leaf script, control block]
    (BIP-341 script path; one leaf, so the control block is 33 bytes)."""
    if form == "bare":
        return ()
    leaf = ctv_tapleaf(template_hash)
    _, parity = tweak_pubkey(NUMS_H, leaf.hash)
    return (leaf.script, bytes((TAPSCRIPT_LEAF_VERSION | parity,)) + NUMS_H)


def commitment_matches(spent_script: bytes, spending: Tx, input_index: int = 0) -> bool:
    """Whether ``spent_script`` commits (BIP-119) to ``spending`` at ``input_index``: what an
    inquisition node would enforce and libbitcoinkernel does not. Bare: the pushed hash must be
    ``standard_template_hash``; taproot: the revealed leaf must be ``<that hash> OP_CTV`` and
    the output key must be H tweaked with that leaf."""
    expected = standard_template_hash(spending, input_index)
    bare = parse_ctv_script(spent_script)
    if bare is not None:
        return bare == expected
    return spent_script == commitment_script(expected, "taproot") and spending.inputs[
        input_index
    ].witness == commitment_witness(expected, "taproot")
