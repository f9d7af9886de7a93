"""Mining Protocol messages, extension_type 0x0000 (sv2-spec 05-Mining-Protocol.md §5.3, at
``0f38d51``; SRI ``sv2/subprotocols/mining/src/*.rs`` agrees on field order).

Message types and ``channel_msg`` bits are sv2-spec 08-Message-Types.md after PR #196
(NewMiningJob and SetCustomMiningJob(.Success/.Error) are channel messages). A channel message
carries ``channel_id`` first (§3.2). Notes that matter on the wire:

- ``nominal_hash_rate`` is F32 (:data:`~sv2.types.F32`), little-endian binary32;
- ``min_ntime`` on the two job messages is ``OPTION[U32]``: empty means a future job that a
  later mining ``SetNewPrevHash`` (0x20, not the Template Distribution 0x72) activates;
- ``NewExtendedMiningJob.coinbase_tx_prefix``/``suffix`` are stripped of the BIP141 fields
  (§5.3.16), unlike ``DeclareMiningJob``'s;
- ``SetCustomMiningJob.coinbase_tx_outputs`` is CompactSize count + TxOuts with final values
  (PR #138, #144); in Coinbase-only mode extension 0x0003 (PR #203 §6) appends the
  ``distribution_id`` TLV to it.

Error codes (``*.Error.error_code``) are implementation defined since PR #194; ours are in
:mod:`sv2.mining.errors`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated

from sv2.messages.base import Message, register
from sv2.types import (
    B0_32,
    B0_64K,
    B0_255,
    BOOL,
    F32,
    OPTION,
    SEQ0_64K,
    SEQ0_255,
    STR0_255,
    U16,
    U32,
    U64,
    U256,
)

# SetupConnection.flags for protocol = Mining (§5.3.1), bit 0 = LSB.
MINING_FLAG_REQUIRES_STANDARD_JOBS = 1 << 0
MINING_FLAG_REQUIRES_WORK_SELECTION = 1 << 1
MINING_FLAG_REQUIRES_VERSION_ROLLING = 1 << 2
# SetupConnection.Success.flags for protocol = Mining (§5.3.1).
MINING_SUCCESS_REQUIRES_FIXED_VERSION = 1 << 0
MINING_SUCCESS_REQUIRES_EXTENDED_CHANNELS = 1 << 1


@register(0x0000, 0x10, "OpenStandardMiningChannel")
@dataclass(frozen=True)
class OpenStandardMiningChannel(Message):
    """§5.3.2."""

    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[bytes, U256]


@register(0x0000, 0x11, "OpenStandardMiningChannel.Success")
@dataclass(frozen=True)
class OpenStandardMiningChannelSuccess(Message):
    """§5.3.3."""

    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@register(0x0000, 0x12, "OpenMiningChannel.Error")
@dataclass(frozen=True)
class OpenMiningChannelError(Message):
    """§5.3.6: the answer to either Open*MiningChannel."""

    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@register(0x0000, 0x13, "OpenExtendedMiningChannel")
@dataclass(frozen=True)
class OpenExtendedMiningChannel(Message):
    """§5.3.4: OpenStandardMiningChannel's fields, then ``min_extranonce_size``."""

    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[bytes, U256]
    min_extranonce_size: Annotated[int, U16]


@register(0x0000, 0x14, "OpenExtendedMiningChannel.Success")
@dataclass(frozen=True)
class OpenExtendedMiningChannelSuccess(Message):
    """§5.3.5. ``extranonce_size`` is what the miner rolls, after ``extranonce_prefix``."""

    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_size: Annotated[int, U16]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@register(0x0000, 0x15, "NewMiningJob", channel_msg=True)
@dataclass(frozen=True)
class NewMiningJob(Message):
    """§5.3.15 (standard channels). ``merkle_root`` in internal byte order."""

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, OPTION(U32)]
    version: Annotated[int, U32]
    merkle_root: Annotated[bytes, U256]


@register(0x0000, 0x16, "UpdateChannel", channel_msg=True)
@dataclass(frozen=True)
class UpdateChannel(Message):
    """§5.3.7."""

    channel_id: Annotated[int, U32]
    nominal_hash_rate: Annotated[float, F32]
    maximum_target: Annotated[bytes, U256]


@register(0x0000, 0x17, "UpdateChannel.Error", channel_msg=True)
@dataclass(frozen=True)
class UpdateChannelError(Message):
    """§5.3.8."""

    channel_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@register(0x0000, 0x18, "CloseChannel", channel_msg=True)
@dataclass(frozen=True)
class CloseChannel(Message):
    """§5.3.9 (either direction)."""

    channel_id: Annotated[int, U32]
    reason_code: Annotated[str, STR0_255]


@register(0x0000, 0x19, "SetExtranoncePrefix", channel_msg=True)
@dataclass(frozen=True)
class SetExtranoncePrefix(Message):
    """§5.3.10."""

    channel_id: Annotated[int, U32]
    extranonce_prefix: Annotated[bytes, B0_32]


@register(0x0000, 0x1A, "SubmitSharesStandard", channel_msg=True)
@dataclass(frozen=True)
class SubmitSharesStandard(Message):
    """§5.3.11."""

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]


@register(0x0000, 0x1B, "SubmitSharesExtended", channel_msg=True)
@dataclass(frozen=True)
class SubmitSharesExtended(Message):
    """§5.3.12: SubmitSharesStandard's fields, then the miner's ``extranonce`` (exactly the
    channel's ``extranonce_size``). Extension 0x0002 may append a ``user_identity`` TLV."""

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]
    extranonce: Annotated[bytes, B0_32]

    @classmethod
    def decode(cls, payload: bytes, *, allow_tlvs: bool = True) -> SubmitSharesExtended:
        """The generic decoder's result, without its per-field calls for the common frame (no
        TLVs): this is the message a pool receives most, tens of thousands a second."""
        payload = bytes(payload)
        n = len(payload)
        if n > _SUBMIT_SIZE and payload[_SUBMIT_SIZE] <= 32 and (
            n == _SUBMIT_SIZE + 1 + payload[_SUBMIT_SIZE]
        ):
            # Filled through __dict__ in one go: a frozen dataclass's __init__ (or one
            # object.__setattr__ per field) costs four times as much, per share.
            obj = object.__new__(cls)
            d = obj.__dict__
            (d["channel_id"], d["sequence_number"], d["job_id"], d["nonce"], d["ntime"],
             d["version"]) = _SUBMIT.unpack_from(payload)
            d["extranonce"] = payload[_SUBMIT_SIZE + 1 :]
            d["tlvs"] = ()
            return obj
        return super().decode(payload, allow_tlvs=allow_tlvs)


_SUBMIT = struct.Struct("<6I")
_SUBMIT_SIZE = _SUBMIT.size
_SUBMIT_FIELDS = ("channel_id", "sequence_number", "job_id", "nonce", "ntime", "version")


@register(0x0000, 0x1C, "SubmitShares.Success", channel_msg=True)
@dataclass(frozen=True)
class SubmitSharesSuccess(Message):
    """§5.3.13: one acknowledgement for a batch; the two counters cover only this batch."""

    channel_id: Annotated[int, U32]
    last_sequence_number: Annotated[int, U32]
    new_submits_accepted_count: Annotated[int, U32]
    new_shares_sum: Annotated[int, U64]


@register(0x0000, 0x1D, "SubmitShares.Error", channel_msg=True)
@dataclass(frozen=True)
class SubmitSharesError(Message):
    """§5.3.14: sent at once for every refused submit."""

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@register(0x0000, 0x1F, "NewExtendedMiningJob", channel_msg=True)
@dataclass(frozen=True)
class NewExtendedMiningJob(Message):
    """§5.3.16 (extended and group channels). The coinbase is ``coinbase_tx_prefix +
    extranonce_prefix + extranonce + coinbase_tx_suffix``, without BIP141 fields."""

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, OPTION(U32)]
    version: Annotated[int, U32]
    version_rolling_allowed: Annotated[bool, BOOL]
    merkle_path: Annotated[tuple[bytes, ...], SEQ0_255(U256)]
    coinbase_tx_prefix: Annotated[bytes, B0_64K]
    coinbase_tx_suffix: Annotated[bytes, B0_64K]


@register(0x0000, 0x20, "SetNewPrevHash (Mining)", channel_msg=True)
@dataclass(frozen=True)
class MiningSetNewPrevHash(Message):
    """§5.3.17, the Mining Protocol's SetNewPrevHash (0x20). Named apart from the Template
    Distribution one (0x72, :class:`~sv2.messages.template_distribution.SetNewPrevHash`)."""

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]


@register(0x0000, 0x21, "SetTarget", channel_msg=True)
@dataclass(frozen=True)
class SetTarget(Message):
    """§5.3.21."""

    channel_id: Annotated[int, U32]
    maximum_target: Annotated[bytes, U256]


@register(0x0000, 0x22, "SetCustomMiningJob", channel_msg=True)
@dataclass(frozen=True)
class SetCustomMiningJob(Message):
    """§5.3.18. SRI names ``mining_job_token`` ``token``; the spec's
    ``coinbase_tx_input_nSequence`` is ``coinbase_tx_input_n_sequence`` in snake_case."""

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    version: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]
    coinbase_tx_version: Annotated[int, U32]
    coinbase_prefix: Annotated[bytes, B0_255]
    coinbase_tx_input_n_sequence: Annotated[int, U32]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]
    coinbase_tx_locktime: Annotated[int, U32]
    merkle_path: Annotated[tuple[bytes, ...], SEQ0_255(U256)]


@register(0x0000, 0x23, "SetCustomMiningJob.Success", channel_msg=True)
@dataclass(frozen=True)
class SetCustomMiningJobSuccess(Message):
    """§5.3.19."""

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    job_id: Annotated[int, U32]


@register(0x0000, 0x24, "SetCustomMiningJob.Error", channel_msg=True)
@dataclass(frozen=True)
class SetCustomMiningJobError(Message):
    """§5.3.20."""

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@register(0x0000, 0x25, "SetGroupChannel")
@dataclass(frozen=True)
class SetGroupChannel(Message):
    """§5.3.22. Decoded so a peer's message gets a clear answer; our server opens no group
    channels."""

    group_channel_id: Annotated[int, U32]
    channel_ids: Annotated[tuple[int, ...], SEQ0_64K(U32)]
