"""Spends of the ``musig2`` coinbase output (docs/musig2.md "Spending").

* **Cooperative** (BIP-341 key path): the payout tx signed by the whole committee through a
  :class:`~payouts.settlement.musig2.session.SigningSession` (BIP-327) over its BIP-341
  SIGHASH_DEFAULT, with the taproot tweak of the script tree's root; witness ``[sig64]``.
* **CTV exit** (BIP-341 script path, BIP-119): the *same* payout tx, witness
  ``[leaf script, control block]``: no signature, anyone (any payee) can broadcast it.
* **Fallback** (BIP-341 script path, BIP-68/112/342): after the session FAILED, the fallback
  key holder spends through ``<n> OP_CSV OP_DROP <key> OP_CHECKSIG`` with nSequence = n,
  witness ``[sig64, leaf script, control block]``; valid from ``coinbase height + n``.

All builders are pure; the only secret handled here is the fallback key, by
:func:`sign_fallback_spend`. Committee members sign on their own machines.
"""

from __future__ import annotations

from dataclasses import dataclass

from payouts.crypto.schnorr import sign, verify, xonly_pubkey
from payouts.distribution.amounts import PayoutResult
from payouts.errors import ValidationError
from payouts.settlement.musig2.errors import WrongStateError
from payouts.settlement.musig2.output import (
    PAYOUT_VERSION,
    Musig2Output,
    Musig2RevenueTooSmallError,
    payout_split,
)
from payouts.settlement.musig2.session import PartialSigCheck, SessionState, SigningSession
from payouts.tx.output_scripts import dust_limit
from payouts.tx.sighash import taproot_sighash
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

__all__ = [
    "FallbackSpend",
    "Musig2SpendError",
    "build_fallback_spend",
    "cooperative_sighash",
    "cooperative_spend",
    "ctv_exit_spend",
    "fallback_sighash",
    "open_signing_session",
    "sign_fallback_spend",
]


class Musig2SpendError(ValidationError):
    """A spend of the musig2 output cannot be built as asked."""

    code = "musig2-spend-error"


# -- cooperative key path ---------------------------------------------------------------------


def cooperative_sighash(out: Musig2Output, funding: OutPoint) -> bytes:
    """BIP-341 SIGHASH_DEFAULT of the payout tx spending ``funding``: the MuSig2 message.

    It commits to the outpoint and to the spent output's amount and script, so it exists only
    once the block is found (the coinbase txid moves with the extranonce)."""
    return taproot_sighash(out.payout_tx_for(funding), 0, [out.txout])


def open_signing_session(
    out: Musig2Output, funding: OutPoint, *, nonce_deadline: float, sig_deadline: float,
    psig_check: PartialSigCheck = PartialSigCheck.ON_AGGREGATE,
) -> SigningSession:
    """The coordinator's session for the cooperative spend: committee keys in KeySort order,
    message = :func:`cooperative_sighash`, tweak = the script tree's merkle root (BIP-327
    "Applying Tweaks" with the BIP-341 TapTweak), so the final signature verifies under the
    output key."""
    session = SigningSession(
        out.committee.pubkeys,
        cooperative_sighash(out, funding),
        nonce_deadline=nonce_deadline,
        sig_deadline=sig_deadline,
        taproot_merkle_root=out.merkle_root,
        max_signers=out.params.max_signers,
        psig_check=psig_check,
    )
    if session.output_key != out.output_key:  # pragma: no cover - same KeyAgg, same tweak
        raise AssertionError("session key differs from the output key")
    return session


def _check_session(out: Musig2Output, funding: OutPoint, session: SigningSession) -> None:
    if session.output_key != out.output_key or session.msg != cooperative_sighash(out, funding):
        raise Musig2SpendError(
            "this session does not sign the cooperative spend of this output at this outpoint"
        )


def cooperative_spend(out: Musig2Output, funding: OutPoint, session: SigningSession) -> Tx:
    """The signed cooperative payout tx: witness = the session's 64-byte BIP-340 signature
    (SIGHASH_DEFAULT, so no hash-type byte; BIP-341). Raises
    :class:`~payouts.settlement.musig2.errors.WrongStateError` unless the session is COMPLETE."""
    _check_session(out, funding, session)
    sig = session.final_signature()
    tx = out.payout_tx_for(funding, (sig,))
    # The session verified it under the output key already; this is the last check before the
    # tx leaves us, and it is one BIP-340 verify.
    if not verify(sig, cooperative_sighash(out, funding), out.output_key):  # pragma: no cover
        raise Musig2SpendError("final signature does not verify under the output key")
    return tx


# -- CTV exit ---------------------------------------------------------------------------------


def ctv_exit_spend(out: Musig2Output, funding: OutPoint) -> Tx:
    """The unilateral exit: the payout tx with witness ``[<hash> OP_CTV, control block]``.

    BIP-119 commits to version, locktime, nSequence, the input count and index and the outputs,
    which are the cooperative tx's: only the witness differs, so the fee is the same (a lower
    effective rate: the witness is 100 bytes, not 65). Any payee can CPFP it through its own
    output. Valid only where CTV is enforced (libbitcoinkernel does not enforce it)."""
    leaf = out.ctv_leaf
    if leaf is None:
        raise Musig2SpendError("this output has no CTV leaf (built with ctv_active=False)")
    return out.payout_tx_for(funding, (leaf.script, out.control_block(leaf)))


# -- timelocked fallback ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FallbackSpend:
    """An unsigned fallback spend and its pricing: ``fee`` = ``fee_rate`` × ``vsize`` (the
    vsize with the real witness sizes). ``payout`` is the PR #203 result when it pays the
    distribution (``pay_to`` None), else None: one output to ``pay_to``."""

    tx: Tx  # witness is empty: sign with sign_fallback_spend
    fee: int
    vsize: int
    payout: PayoutResult | None
    pay_to: bytes | None

    @property
    def outputs(self) -> tuple[TxOut, ...]:
        return self.tx.outputs

    def valid_from_height(self, coinbase_height: int) -> int:
        """First block height that may contain it (BIP-68: coin height + n)."""
        return coinbase_height + self.tx.inputs[0].sequence


def _fallback_witness_template(out: Musig2Output) -> tuple[bytes, ...]:
    leaf = out.fallback_leaf
    return (bytes(64), leaf.script, out.control_block(leaf))


def build_fallback_spend(
    out: Musig2Output, funding: OutPoint, *, pay_to: bytes | None = None
) -> FallbackSpend:
    """The fallback tx (unsigned): nVersion 2, nSequence = n (BIP-68 blocks), locktime 0.

    Outputs: by default the distribution's, by the same fee rule as the cooperative tx priced
    with this spend's witness (sig64 + leaf + control block), so an honest fallback holder pays
    everyone as the committee would have; with ``pay_to``, everything less the fee to that one
    script (the holder then owes the payees off-chain: custodial, docs/musig2.md)."""
    n = out.params.fallback_delay
    witness = _fallback_witness_template(out)
    rate = out.params.fee_rate
    if pay_to is None:
        # Same rule, same distribution, priced for this tx's witness and nSequence.
        split = payout_split(out.distribution, out.value, rate, witness=witness, sequence=n)
        outputs, fee, vsize, payout = split.outputs, split.fee, split.vsize, split.payout
    else:
        sized = Tx(PAYOUT_VERSION, (TxIn(funding, b"", n, witness),), (TxOut(0, pay_to),), 0)
        fee, vsize, payout = rate * sized.vsize, sized.vsize, None
        if out.value - fee < dust_limit(pay_to):
            raise Musig2RevenueTooSmallError(f"fallback output {out.value - fee} sat is dust")
        outputs = (TxOut(out.value - fee, pay_to),)
    tx = Tx(PAYOUT_VERSION, (TxIn(funding, b"", n, ()),), outputs, 0)
    return FallbackSpend(tx, fee, vsize, payout, pay_to)


def fallback_sighash(out: Musig2Output, tx: Tx) -> bytes:
    """BIP-342 SIGHASH_DEFAULT of the fallback tx for the fallback leaf (ext_flag 1)."""
    return taproot_sighash(tx, 0, [out.txout], leaf_hash=out.fallback_leaf.hash)


def sign_fallback_spend(
    out: Musig2Output,
    spend: FallbackSpend,
    fallback_seckey: bytes,
    *,
    session: SigningSession,
    aux_rand: bytes | None = None,
) -> Tx:
    """Sign the fallback with the fallback key; refused unless ``session`` — the cooperative
    session for this same output and outpoint — has FAILED (timeout or blame), so the
    engine never takes the fallback while the committee can still sign.

    The signature is BIP-340 with the *untweaked* fallback key over :func:`fallback_sighash`;
    the witness is ``[sig64, leaf script, control block]`` (BIP-341 script path)."""
    funding = spend.tx.inputs[0].prevout
    _check_session(out, funding, session)
    if session.state is not SessionState.FAILED:
        raise WrongStateError(
            f"the fallback is only signed after the cooperative session failed (state "
            f"{session.state})"
        )
    if xonly_pubkey(fallback_seckey) != out.params.fallback_key:
        raise Musig2SpendError("this secret key is not the output's fallback key")
    sig = sign(fallback_sighash(out, spend.tx), fallback_seckey, aux_rand)
    leaf = out.fallback_leaf
    return spend.tx.with_input_witness(0, (sig, leaf.script, out.control_block(leaf)))
