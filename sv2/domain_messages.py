"""The payout domain on the wire: ``SetPayoutDistribution`` (extension 0x0003, sv2-spec PR #203
§3.1) <-> :class:`~payouts.distribution.model.Distribution`, and ``SetSettlementMode``
(extension 0x4003, docs/extensions/0x4003-settlement-modes.md) <->
:class:`~payouts.settlement.modes.SettlementMode`.

Both JD roles use these, so they sit below both. The amount fields of ``pool_payout`` and
``payouts`` carry *weights*; ``additional_outputs`` carry fixed satoshi amounts (PR #203 as of
2026-09-09, the revision :mod:`sv2.messages.payouts` implements).
"""

from __future__ import annotations

from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.errors import ValidationError
from payouts.settlement.ctv import CtvParams
from payouts.settlement.modes import MODE_NAMES, Musig2Mode, SettlementMode
from payouts.settlement.musig2.output import Committee
from payouts.tx.compact import read_compact_size
from payouts.tx.output_scripts import output_size, sigop_cost
from payouts.tx.txout import TxOut
from sv2.errors import EncodeError
from sv2.messages.payouts import SetPayoutDistribution
from sv2.messages.settlement import (
    CTV_FORM_BARE,
    CTV_FORM_TAPROOT,
    MODE_COINBASE,
    MODE_CTV,
    MODE_MUSIG2,
    SetSettlementMode,
)
from sv2.messages.settlement import MODE_NAMES as WIRE_MODE_NAMES
from sv2.messages.template_distribution import CoinbaseOutputConstraints

_MODE_CODES: dict[str, int] = {v: k for k, v in WIRE_MODE_NAMES.items()}
assert set(_MODE_CODES) == set(MODE_NAMES)  # the wire codes cover exactly the domain's modes

# The one settlement output of ctv and musig2: 8-byte amount, 1-byte length, 34-byte script
# (``0x20 <32B> OP_CTV`` or ``OP_1 <32B>``).
SETTLEMENT_OUTPUT_SIZE = 8 + 1 + 34

# -- SetPayoutDistribution <-> Distribution ---------------------------------------------------


def distribution_message(d: Distribution) -> SetPayoutDistribution:
    """PR #203 §3.1 message for ``d``."""
    return SetPayoutDistribution(
        distribution_id=d.distribution_id,
        pool_payout=TxOut(d.pool_payout.weight, d.pool_payout.script).serialize(),
        payouts=tuple(TxOut(p.weight, p.script).serialize() for p in d.payouts),
        dust_limits=tuple(p.dust_limit for p in d.payouts),
        additional_outputs=tuple(
            TxOut(a.amount, a.script).serialize() for a in d.additional_outputs
        ),
    )


def _txout(raw: bytes, what: str) -> TxOut:
    if len(raw) < 9:
        raise ValidationError(f"{what}: a TxOut is at least 9 bytes")
    try:
        n, pos = read_compact_size(raw, 8)
    except ValueError as exc:
        raise ValidationError(f"{what}: {exc}") from None
    if pos + n != len(raw):
        raise ValidationError(f"{what}: script length {n} does not match the TxOut size")
    return TxOut(int.from_bytes(raw[:8], "little"), bytes(raw[pos:]))


def distribution_from_message(msg: SetPayoutDistribution) -> Distribution:
    """What a JD client does with a SetPayoutDistribution (raises ValidationError if the
    message breaks PR #203 §3.1: lengths differ, zero weights, malformed TxOuts)."""
    if len(msg.payouts) != len(msg.dust_limits):
        raise ValidationError("payouts and dust_limits differ in length")
    pool = _txout(msg.pool_payout, "pool_payout")
    payees = []
    for i, (raw, dust) in enumerate(zip(msg.payouts, msg.dust_limits, strict=True)):
        o = _txout(raw, f"payouts[{i}]")
        payees.append(Payee(o.script, o.value, dust))
    extras = [
        _txout(raw, f"additional_outputs[{i}]") for i, raw in enumerate(msg.additional_outputs)
    ]
    return Distribution(
        distribution_id=msg.distribution_id,
        pool_payout=PoolPayout(pool.script, pool.value),
        payouts=tuple(payees),
        additional_outputs=tuple(AdditionalOutput(o.script, o.value) for o in extras),
    )


# -- SetSettlementMode <-> SettlementMode ------------------------------------------------------


def mode_to_message(mode: SettlementMode, distribution_id: int) -> SetSettlementMode:
    """The 0x4003 announcement for ``distribution_id``; unused fields are zero/empty. Raises
    :class:`~sv2.errors.EncodeError` (with the spec §3.3 code) for a mode no client may accept:
    a JDS must never send one."""
    c = mode.ctv if mode.name == "ctv" else None
    m = mode.musig2 if mode.name == "musig2" else None
    msg = SetSettlementMode(
        distribution_id=distribution_id,
        mode=_MODE_CODES[mode.name],
        ctv_arity=(c.arity or 0) if c else 0,
        ctv_output_form=(CTV_FORM_TAPROOT if c.form == "taproot" else CTV_FORM_BARE)
        if c
        else 0,
        ctv_anchor=c.anchor if c else False,
        ctv_fee_rate=c.fee_rate if c else 0,
        ctv_tx_version=(c.version or 0) if c else 0,
        ctv_sequence=c.sequence if c else 0,
        ctv_locktime=c.locktime if c else 0,
        musig2_committee=m.committee if m else (),
        musig2_fallback_timelock=m.fallback_timelock if m else 0,
        musig2_fallback_key=m.fallback_key if m else bytes(32),
        musig2_fee_rate=m.fee_rate if m else 0,
        musig2_ctv_leaf=m.ctv_leaf if m else False,
    )
    found = msg.problem()
    if found is not None:
        raise EncodeError(found[1], code=found[0])
    return msg


def mode_from_message(msg: SetSettlementMode) -> SettlementMode:
    """Inverse of :func:`mode_to_message` (what a JD client does); unused fields are ignored.

    Refuses, with :class:`~sv2.messages.settlement.SettlementModeError` and the spec's code
    (docs/extensions/0x4003-settlement-modes.md §3.3), every message the spec forbids, also one
    built in memory rather than decoded: a JD client that calls this never declares against a
    mode it could not build."""
    msg.validate()
    if msg.mode == MODE_COINBASE:
        return SettlementMode("coinbase")
    if msg.mode == MODE_CTV:
        params = CtvParams(
            arity=msg.ctv_arity or None,
            form="taproot" if msg.ctv_output_form == CTV_FORM_TAPROOT else "bare",
            anchor=msg.ctv_anchor,
            fee_rate=msg.ctv_fee_rate,
            version=msg.ctv_tx_version or None,
            sequence=msg.ctv_sequence,
            locktime=msg.ctv_locktime,
        )
        return SettlementMode("ctv", params)
    assert msg.mode == MODE_MUSIG2  # validate() refused every other value
    mode = Musig2Mode(
        msg.musig2_committee,
        msg.musig2_fallback_timelock,
        msg.musig2_fallback_key,
        msg.musig2_fee_rate,
        msg.musig2_ctv_leaf,
    )
    # The settlement layer's own checks agree with validate(); running them here means a mode
    # this returns can always be built (Committee.from_pubkeys, Musig2Params).
    Committee.from_pubkeys(mode.committee)
    mode.settlement_params()
    return SettlementMode("musig2", musig2=mode)


# -- CoinbaseOutputConstraints per mode --------------------------------------------------------


def coinbase_output_constraints(d: Distribution, mode: SettlementMode) -> CoinbaseOutputConstraints:
    """The CoinbaseOutputConstraints a JD client sends for ``d`` settled in ``mode`` (spec §4):
    :func:`output_constraints_for` of the mode's name."""
    return output_constraints_for(d, mode.name)


def output_constraints_for(d: Distribution, mode_name: str) -> CoinbaseOutputConstraints:
    """The CoinbaseOutputConstraints for ``d`` settled in the mode named ``mode_name`` (spec §4):

    - ``coinbase``: PR #203 §5, every output the distribution can put in the coinbase (pool
      payout, every payee, since pruning depends on T, and the additional outputs);
    - ``ctv`` / ``musig2``: the one 43-byte settlement output (a 34-byte script, sigop cost 0:
      neither ``<32B> OP_CTV`` nor P2TR has a legacy CHECKSIG) plus the additional outputs.

    Size is Σ serialized TxOut sizes (8 + CompactSize + script), without an output-count prefix,
    and sigops Σ of legacy sigops × 4, both as SRI's ``coinbase_output_constraints.rs``. A JD
    client adds its own 0-value outputs to both."""
    extra = [a.script for a in d.additional_outputs]
    if mode_name == "coinbase":
        scripts = [d.pool_payout.script, *(p.script for p in d.payouts), *extra]
        size = 0
    else:
        scripts = extra
        size = SETTLEMENT_OUTPUT_SIZE
    size += sum(output_size(s) for s in scripts)
    sigops = sum(sigop_cost(s) for s in scripts)
    return CoinbaseOutputConstraints(
        coinbase_output_max_additional_size=min(size, 0xFFFFFFFF),
        coinbase_output_max_additional_sigops=min(sigops, 0xFFFF),
    )


__all__ = [
    "SETTLEMENT_OUTPUT_SIZE",
    "coinbase_output_constraints",
    "distribution_from_message",
    "distribution_message",
    "mode_from_message",
    "mode_to_message",
    "output_constraints_for",
]
