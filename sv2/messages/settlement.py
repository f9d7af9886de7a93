"""Settlement-mode extension 0x4003 (this project, experimental range; the normative text is
docs/extensions/0x4003-settlement-modes.md, its conformance vectors 0x4003-vectors.json).

Extension 0x0003 (sv2-spec PR #203) tells a JD client *who* is paid and with which weights; it
assumes the weights become coinbase outputs one for one. This extension says *how* the same
distribution is settled, so that the client can build the exact coinbase the JDS will accept:

- ``coinbase`` (0): the PR #203 outputs themselves (nothing changes);
- ``ctv`` (1): one output committing (BIP-119) to a fan-out tree paying those amounts, then
  the distribution's additional outputs; the tree's shape and pricing travel in the ``ctv_*``
  fields, because all of them are committed to by the template hash;
- ``musig2`` (2): one P2TR output whose internal key is the BIP-327 aggregate of a committee of
  payee keys, with a timelocked fallback leaf and optionally the CTV exit leaf.

=========  ======  ==================  ============  ===========
ext type   msg     message             direction     channel_msg
=========  ======  ==================  ============  ===========
0x4003     0x00    SetSettlementMode   JDS -> JDC    0
=========  ======  ==================  ============  ===========

``0x4000-0x7fff`` is the experimental range (sv2-spec §3.4): it MUST NOT ship in production.
Fields a mode does not use MUST be sent as 0 / empty and MUST be ignored by the receiver.

The decoder refuses every message the spec forbids (spec §3.3), each with a named error
(:class:`SettlementModeError`, a :class:`~sv2.errors.DecodeError` whose ``code`` is one of the
``ERR_*`` constants here); the frame decoder refuses the ``channel_msg`` bit and
:meth:`SetSettlementMode.to_frame` will not set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Self

from payouts.crypto import musig2
from payouts.crypto.schnorr import SchnorrError, parse_xonly
from payouts.crypto.secp import SecpError
from payouts.settlement.ctv import MAX_ARITY
from payouts.settlement.ctv import MAX_FEE_RATE as CTV_MAX_FEE_RATE
from payouts.settlement.musig2.output import MAX_FALLBACK_DELAY, MIN_FALLBACK_DELAY
from payouts.settlement.musig2.output import MAX_FEE_RATE as MUSIG2_MAX_FEE_RATE
from sv2.errors import DecodeError, EncodeError
from sv2.framing import Frame
from sv2.messages.base import Message, register
from sv2.types import BOOL, PUBKEY, SEQ0_255, U8, U16, U32, U64, FixedBytes

EXT_SETTLEMENT_MODES = 0x4003
"""Experimental extension id of the settlement-mode extension (this project)."""

MODE_COINBASE = 0
MODE_CTV = 1
MODE_MUSIG2 = 2
MODE_NAMES = {MODE_COINBASE: "coinbase", MODE_CTV: "ctv", MODE_MUSIG2: "musig2"}

CTV_FORM_BARE = 0
CTV_FORM_TAPROOT = 1
CTV_TX_VERSIONS = (0, 2, 3)  # 0: automatic

# Error codes this extension adds to DeclareMiningJob.Error / RequestPayoutOutputs.Error.
ERR_INVALID_SETTLEMENT_OUTPUTS = "invalid-settlement-outputs"
ERR_SETTLEMENT_MODE_NOT_NEGOTIATED = "settlement-mode-not-negotiated"

# Why a JD client refuses a SetSettlementMode (spec §3.3); never sent on the wire by the JDC,
# which falls back (spec §7), but named so that logs and implementations agree.
ERR_CHANNEL_MSG = "settlement-mode-channel-msg"
ERR_UNKNOWN_MODE = "settlement-mode-unknown"
ERR_CTV_FORM = "ctv-unknown-output-form"
ERR_CTV_ARITY = "ctv-invalid-arity"
ERR_CTV_TX_VERSION = "ctv-invalid-tx-version"
ERR_CTV_FEE_RATE = "ctv-invalid-fee-rate"
ERR_CTV_ANCHOR = "ctv-anchor-required"
ERR_MUSIG2_EMPTY_COMMITTEE = "musig2-empty-committee"
ERR_MUSIG2_COMMITTEE_KEY = "musig2-invalid-committee-key"
ERR_MUSIG2_COMMITTEE_ORDER = "musig2-committee-not-sorted"
ERR_MUSIG2_COMMITTEE = "musig2-invalid-committee"
ERR_MUSIG2_FALLBACK_KEY = "musig2-invalid-fallback-key"
ERR_MUSIG2_TIMELOCK = "musig2-invalid-fallback-timelock"
ERR_MUSIG2_FEE_RATE = "musig2-invalid-fee-rate"

DECODE_ERRORS = (
    ERR_CHANNEL_MSG,
    ERR_UNKNOWN_MODE,
    ERR_CTV_FORM,
    ERR_CTV_ARITY,
    ERR_CTV_TX_VERSION,
    ERR_CTV_FEE_RATE,
    ERR_CTV_ANCHOR,
    ERR_MUSIG2_EMPTY_COMMITTEE,
    ERR_MUSIG2_COMMITTEE_KEY,
    ERR_MUSIG2_COMMITTEE_ORDER,
    ERR_MUSIG2_COMMITTEE,
    ERR_MUSIG2_FALLBACK_KEY,
    ERR_MUSIG2_TIMELOCK,
    ERR_MUSIG2_FEE_RATE,
)
"""Every code :class:`SettlementModeError` can carry, in the order the spec checks them."""

COMPRESSED_PUBKEY = FixedBytes("PUBKEY33", 33)
"""A 33-byte SEC1 compressed secp256k1 point (BIP-327 individual public keys are plain keys,
not x-only)."""


class SettlementModeError(DecodeError):
    """A SetSettlementMode the spec forbids (§3.3). ``code`` is one of :data:`DECODE_ERRORS`."""

    code = "invalid-settlement-mode"

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"SetSettlementMode: {reason}")
        self.code = code


@register(EXT_SETTLEMENT_MODES, 0x00, "SetSettlementMode")
@dataclass(frozen=True)
class SetSettlementMode(Message):
    """Sent by the JDS right after every ``SetPayoutDistribution`` (0x0003) to a client that
    negotiated 0x4003; ``distribution_id`` names that distribution (spec §3.1).

    ``ctv_arity``: 0 = flat when the flat tx fits, else a 16-ary tree; k >= 2 = a k-ary tree.
    ``ctv_tx_version``: 0 = automatic (3/TRUC when every tx is at most 10,000 vB, else 2).
    ``musig2_fallback_timelock``: BIP-68 relative lock (blocks) of the fallback leaf.
    ``musig2_fee_rate``: sat/vB the cooperative payout tx pays (spec §6.4).
    ``musig2_ctv_leaf``: the tree also holds the CTV exit leaf (only where CTV is enforced).
    """

    distribution_id: Annotated[int, U64]
    mode: Annotated[int, U8]
    ctv_arity: Annotated[int, U16]
    ctv_output_form: Annotated[int, U8]
    ctv_anchor: Annotated[bool, BOOL]
    ctv_fee_rate: Annotated[int, U32]
    ctv_tx_version: Annotated[int, U32]
    ctv_sequence: Annotated[int, U32]
    ctv_locktime: Annotated[int, U32]
    musig2_committee: Annotated[tuple[bytes, ...], SEQ0_255(COMPRESSED_PUBKEY)]
    musig2_fallback_timelock: Annotated[int, U32]
    musig2_fallback_key: Annotated[bytes, PUBKEY]
    musig2_fee_rate: Annotated[int, U32]
    musig2_ctv_leaf: Annotated[bool, BOOL]

    def problem(self) -> tuple[str, str] | None:
        """(error code, reason) of the first rule of spec §3.3 this message breaks, or None.
        Only the fields of its own mode are checked: the others MUST be ignored."""
        if self.mode == MODE_CTV:
            return _ctv_problem(self)
        if self.mode == MODE_MUSIG2:
            return _musig2_problem(self)
        if self.mode != MODE_COINBASE:
            return ERR_UNKNOWN_MODE, f"unknown mode {self.mode} (0 coinbase, 1 ctv, 2 musig2)"
        return None

    def validate(self) -> None:
        """Raise :class:`SettlementModeError` if :meth:`problem` finds one."""
        found = self.problem()
        if found is not None:
            raise SettlementModeError(*found)

    @classmethod
    def decode(cls, payload: bytes, *, allow_tlvs: bool = True) -> Self:
        """The codec's decode, then the spec's validity rules (§3.3)."""
        msg = super().decode(payload, allow_tlvs=allow_tlvs)
        msg.validate()
        return msg

    @classmethod
    def check_frame(cls, frame: Frame) -> None:
        """§3.1: channel_msg MUST be 0 (a JD message, no channel id in the payload)."""
        if frame.channel_msg:
            raise SettlementModeError(ERR_CHANNEL_MSG, "the channel_msg bit must be 0")

    def to_frame(self, *, channel_msg: bool | None = None) -> Frame:
        """The frame, never with the channel_msg bit (§3.1)."""
        if channel_msg:
            raise EncodeError(
                "SetSettlementMode is sent with channel_msg 0 (extension 0x4003 §3.1)",
                code=ERR_CHANNEL_MSG,
            )
        return super().to_frame(channel_msg=False)


def _ctv_problem(m: SetSettlementMode) -> tuple[str, str] | None:
    if m.ctv_output_form not in (CTV_FORM_BARE, CTV_FORM_TAPROOT):
        return ERR_CTV_FORM, f"unknown ctv_output_form {m.ctv_output_form} (0 bare, 1 taproot)"
    if m.ctv_arity == 1:
        return ERR_CTV_ARITY, "ctv_arity 1 (a tree of one-output txs) is not a fan-out"
    if m.ctv_arity > MAX_ARITY:  # pragma: no cover - a U16 cannot exceed it
        return ERR_CTV_ARITY, f"ctv_arity {m.ctv_arity} above {MAX_ARITY}"
    if m.ctv_tx_version not in CTV_TX_VERSIONS:
        return ERR_CTV_TX_VERSION, f"ctv_tx_version {m.ctv_tx_version} is not 0, 2 or 3"
    if m.ctv_fee_rate > CTV_MAX_FEE_RATE:
        return ERR_CTV_FEE_RATE, f"ctv_fee_rate {m.ctv_fee_rate} above {CTV_MAX_FEE_RATE} sat/vB"
    if m.ctv_fee_rate == 0 and not m.ctv_anchor:
        return ERR_CTV_ANCHOR, "ctv_fee_rate 0 needs the anchor: nothing else can pay the fees"
    if m.ctv_fee_rate == 0 and m.ctv_tx_version == 2:
        return ERR_CTV_TX_VERSION, "ctv_tx_version 2 with ctv_fee_rate 0 can never be relayed"
    return None


def _musig2_problem(m: SetSettlementMode) -> tuple[str, str] | None:
    keys = m.musig2_committee
    if not keys:
        return ERR_MUSIG2_EMPTY_COMMITTEE, "mode musig2 with no committee key"
    aggregate: Exception | None = None
    try:
        musig2.key_agg(list(keys))  # parses every key first, naming the first bad one
    except musig2.InvalidContributionError as exc:
        return ERR_MUSIG2_COMMITTEE_KEY, f"committee key {exc.signer} is not a curve point"
    except (musig2.MuSig2Error, SecpError) as exc:  # pragma: no cover - a discrete-log break
        aggregate = exc
    for i in range(1, len(keys)):
        if keys[i - 1] >= keys[i]:
            return (
                ERR_MUSIG2_COMMITTEE_ORDER,
                f"committee keys {i - 1} and {i} are not strictly ascending (BIP-327 KeySort, "
                "no duplicates)",
            )
    if aggregate is not None:  # pragma: no cover
        return ERR_MUSIG2_COMMITTEE, f"the committee does not aggregate: {aggregate}"
    try:
        parse_xonly(m.musig2_fallback_key)
    except SchnorrError:
        return ERR_MUSIG2_FALLBACK_KEY, "musig2_fallback_key is not the x of a curve point"
    if not MIN_FALLBACK_DELAY <= m.musig2_fallback_timelock <= MAX_FALLBACK_DELAY:
        return (
            ERR_MUSIG2_TIMELOCK,
            f"musig2_fallback_timelock {m.musig2_fallback_timelock} is not in "
            f"{MIN_FALLBACK_DELAY}..{MAX_FALLBACK_DELAY} blocks",
        )
    if not 1 <= m.musig2_fee_rate <= MUSIG2_MAX_FEE_RATE:
        return (
            ERR_MUSIG2_FEE_RATE,
            f"musig2_fee_rate {m.musig2_fee_rate} is not in 1..{MUSIG2_MAX_FEE_RATE} sat/vB",
        )
    return None


__all__ = [
    "COMPRESSED_PUBKEY",
    "CTV_FORM_BARE",
    "CTV_FORM_TAPROOT",
    "CTV_TX_VERSIONS",
    "DECODE_ERRORS",
    "ERR_CHANNEL_MSG",
    "ERR_CTV_ANCHOR",
    "ERR_CTV_ARITY",
    "ERR_CTV_FEE_RATE",
    "ERR_CTV_FORM",
    "ERR_CTV_TX_VERSION",
    "ERR_INVALID_SETTLEMENT_OUTPUTS",
    "ERR_MUSIG2_COMMITTEE",
    "ERR_MUSIG2_COMMITTEE_KEY",
    "ERR_MUSIG2_COMMITTEE_ORDER",
    "ERR_MUSIG2_EMPTY_COMMITTEE",
    "ERR_MUSIG2_FALLBACK_KEY",
    "ERR_MUSIG2_FEE_RATE",
    "ERR_MUSIG2_TIMELOCK",
    "ERR_SETTLEMENT_MODE_NOT_NEGOTIATED",
    "ERR_UNKNOWN_MODE",
    "EXT_SETTLEMENT_MODES",
    "MODE_COINBASE",
    "MODE_CTV",
    "MODE_MUSIG2",
    "MODE_NAMES",
    "SetSettlementMode",
    "SettlementModeError",
]
