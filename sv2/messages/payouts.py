"""Payout extensions: 0x0003 (sv2-spec PR #203) and the per-job adapter (PR #202) under 0x4002.

**Extension 0x0003, "Non-Custodial Payouts"** -- sv2-spec PR #203
(``extensions/0x0003-non-custodial-payouts.md``), head ``04bac85b`` (2026-08-21) plus the
2026-09-09 change that gives ``additional_outputs`` fixed satoshi amounts. Not merged: the wire
format may still move.

- ``SetPayoutDistribution`` (0x0003, msg 0x00, channel_msg 0, JDS -> JDC, §3.1): the amount field of
  ``pool_payout`` and of each ``payouts[i]`` TxOut is a *weight*, not satoshis.
- TLV (0x0003, 0x01) ``distribution_id``, length 8, U64 LE (§6), appended to ``DeclareMiningJob``
  (Full-Template) or ``SetCustomMiningJob`` (Coinbase-only). Those messages keep
  extension_type 0x0000.

**Extension 0x4002, "Per-Job Payout Outputs" (this project, experimental range)** -- the messages
of the closed sv2-spec PR #202 (``extensions/0x0003-non-custodial-pool-payouts.md``, head
``0d4bd387``), byte-for-byte, but under extension_type ``0x4002`` instead of ``0x0003`` so they can
never collide with PR #203's ``SetPayoutDistribution`` (both use msg_type 0x00 in 0x0003):

=========  ======  ==============================  =================
ext type   msg     message                         direction
=========  ======  ==============================  =================
0x4002     0x00    RequestPayoutOutputs            JDC -> JDS
0x4002     0x01    RequestPayoutOutputs.Success    JDS -> JDC
0x4002     0x02    RequestPayoutOutputs.Error      JDS -> JDC
=========  ======  ==============================  =================

``0x4000-0x7fff`` is the experimental range (sv2-spec §3.4): such ids MUST NOT ship in
production. ``0x4003`` is reserved for the project's settlement-mode extension; its message
numbers 0x00-0x0f are left free here on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from sv2.errors import EncodeError, InvalidTlvError
from sv2.messages.base import Message, register
from sv2.tlv import Tlv, register_tlv
from sv2.types import B0_64K, B0_255, SEQ0_64K, STR0_255, U32, U64

EXT_NON_CUSTODIAL_PAYOUTS = 0x0003
"""sv2-spec PR #203."""

EXT_PER_JOB_PAYOUTS = 0x4002
"""Experimental id of the PR #202 per-job adapter (this project)."""

TLV_DISTRIBUTION_ID = 0x01

# PR #203 §7.3 error codes for DeclareMiningJob.Error / SetCustomMiningJob.Error.
ERR_STALE_PAYOUT_DISTRIBUTION = "stale-payout-distribution"
ERR_INVALID_PAYOUT_DISTRIBUTION = "invalid-payout-distribution"
# PR #202 §4.
ERR_STALE_PAYOUT_OUTPUTS = "stale-payout-outputs"


@register(EXT_NON_CUSTODIAL_PAYOUTS, 0x00, "SetPayoutDistribution")
@dataclass(frozen=True)
class SetPayoutDistribution(Message):
    """PR #203 §3.1. ``pool_payout`` and each element of ``payouts``/``additional_outputs`` is
    one consensus-serialized TxOut (8-byte LE amount, CompactSize script length, script).
    ``dust_limits`` has one entry per payout (the codec does not enforce the semantic rules:
    equal lengths, non-zero weights -- that is the distribution layer's job)."""

    distribution_id: Annotated[int, U64]
    pool_payout: Annotated[bytes, B0_64K]
    payouts: Annotated[tuple[bytes, ...], SEQ0_64K(B0_64K)]
    dust_limits: Annotated[tuple[int, ...], SEQ0_64K(U32)]
    additional_outputs: Annotated[tuple[bytes, ...], SEQ0_64K(B0_64K)]


@dataclass(frozen=True, slots=True)
class DistributionIdTlv:
    """TLV (0x0003, 0x01) ``distribution_id``: length MUST be 8, value U64 LE (PR #203 §6)."""

    EXTENSION_TYPE: ClassVar[int] = EXT_NON_CUSTODIAL_PAYOUTS
    FIELD_TYPE: ClassVar[int] = TLV_DISTRIBUTION_ID
    NAME: ClassVar[str] = "distribution_id"

    distribution_id: int

    def to_tlv(self) -> Tlv:
        v = self.distribution_id
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
            raise EncodeError(f"distribution_id must be a U64, got {v!r}")
        return Tlv(self.EXTENSION_TYPE, self.FIELD_TYPE, v.to_bytes(8, "little"))

    def to_json(self) -> dict[str, Any]:
        return {"distribution_id": self.distribution_id}

    @classmethod
    def parse(cls, value: bytes) -> DistributionIdTlv:
        if len(value) != 8:
            raise InvalidTlvError(f"distribution_id TLV length must be 8, got {len(value)}")
        return cls(int.from_bytes(value, "little"))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DistributionIdTlv:
        v = obj.get("distribution_id")
        if not isinstance(v, int) or isinstance(v, bool):
            raise EncodeError(f"distribution_id TLV needs an integer 'distribution_id', got {v!r}")
        tlv = cls(v)
        tlv.to_tlv()  # validates the range
        return tlv


register_tlv(
    EXT_NON_CUSTODIAL_PAYOUTS,
    TLV_DISTRIBUTION_ID,
    DistributionIdTlv.parse,
    DistributionIdTlv.from_json,
)


@register(EXT_PER_JOB_PAYOUTS, 0x00, "RequestPayoutOutputs")
@dataclass(frozen=True)
class RequestPayoutOutputs(Message):
    """PR #202 §2.1 (under 0x4002): ask for outputs that pay exactly
    ``available_payout_value`` satoshis."""

    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    available_payout_value: Annotated[int, U64]


@register(EXT_PER_JOB_PAYOUTS, 0x01, "RequestPayoutOutputs.Success")
@dataclass(frozen=True)
class RequestPayoutOutputsSuccess(Message):
    """PR #202 §2.2: ``coinbase_tx_outputs`` is CompactSize count + TxOuts (as in
    SetCustomMiningJob) and sums exactly to the requested value. Single-use per job."""

    request_id: Annotated[int, U32]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]


@register(EXT_PER_JOB_PAYOUTS, 0x02, "RequestPayoutOutputs.Error")
@dataclass(frozen=True)
class RequestPayoutOutputsError(Message):
    """PR #202 §2.3."""

    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


def distribution_id_of(msg: Message) -> int | None:
    """The ``distribution_id`` TLV carried by ``msg`` (e.g. a DeclareMiningJob), if any."""
    for t in msg.tlvs:
        if isinstance(t, DistributionIdTlv):
            return t.distribution_id
    return None
