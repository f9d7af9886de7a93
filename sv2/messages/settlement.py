"""Settlement-mode extension 0x4003 (this project, experimental range; docs/extensions/
0x4003-settlement-modes.md).

Extension 0x0003 (sv2-spec PR #203) tells a JD client *who* is paid and with which weights; it
assumes the weights become coinbase outputs one for one. This extension says *how* the same
distribution is settled, so that the client can build the exact coinbase the JDS will accept:

- ``coinbase`` (0): the PR #203 outputs themselves (nothing changes);
- ``ctv`` (1): one output committing (BIP-119) to a fan-out tree paying those amounts, then
  the distribution's additional outputs; the tree's shape and pricing travel in the ``ctv_*``
  fields, because all of them are committed to by the template hash;
- ``musig2`` (2): one P2TR output whose internal key is the BIP-327 aggregate of a committee of
  payee keys, with a timelocked fallback leaf.

=========  ======  ==================  ============  ===========
ext type   msg     message             direction     channel_msg
=========  ======  ==================  ============  ===========
0x4003     0x00    SetSettlementMode   JDS -> JDC    0
=========  ======  ==================  ============  ===========

``0x4000-0x7fff`` is the experimental range (sv2-spec §3.4): it MUST NOT ship in production.
Fields a mode does not use MUST be sent as 0 / empty and MUST be ignored by the receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

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

# Error codes this extension adds to DeclareMiningJob.Error / RequestPayoutOutputs.Error.
ERR_INVALID_SETTLEMENT_OUTPUTS = "invalid-settlement-outputs"
ERR_SETTLEMENT_MODE_NOT_NEGOTIATED = "settlement-mode-not-negotiated"

COMPRESSED_PUBKEY = FixedBytes("PUBKEY33", 33)
"""A 33-byte SEC1 compressed secp256k1 point (BIP-327 individual public keys are plain keys,
not x-only)."""


@register(EXT_SETTLEMENT_MODES, 0x00, "SetSettlementMode")
@dataclass(frozen=True)
class SetSettlementMode(Message):
    """Sent by the JDS right after every ``SetPayoutDistribution`` (0x0003) to a client that
    negotiated 0x4003; ``distribution_id`` names that distribution.

    ``ctv_arity``: 0 = flat while standard, then a 16-ary tree; k >= 2 = a k-ary tree.
    ``ctv_tx_version``: 0 = automatic (3/TRUC when every tx fits 10,000 vB, else 2), else 2 or 3.
    ``musig2_fallback_timelock``: BIP-68 relative lock (blocks) of the fallback leaf.
    ``musig2_fee_rate``: sat/vB the cooperative payout tx pays (docs/musig2.md fee rule).
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


__all__ = [
    "COMPRESSED_PUBKEY",
    "CTV_FORM_BARE",
    "CTV_FORM_TAPROOT",
    "ERR_INVALID_SETTLEMENT_OUTPUTS",
    "ERR_SETTLEMENT_MODE_NOT_NEGOTIATED",
    "EXT_SETTLEMENT_MODES",
    "MODE_COINBASE",
    "MODE_CTV",
    "MODE_MUSIG2",
    "MODE_NAMES",
    "SetSettlementMode",
]
