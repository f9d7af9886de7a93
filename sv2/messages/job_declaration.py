"""Job Declaration Protocol messages, extension_type 0x0000, channel_msg = 0
(sv2-spec 06-Job-Declaration-Protocol.md §6.4; SRI ``sv2/subprotocols/job-declaration``).

Traps kept in mind here:

- ``AllocateMiningJobToken.Success.coinbase_tx_outputs`` is a *CompactSize-prefixed* vector of
  consensus-serialized TxOuts (PR #144); the codec carries it as opaque B0_64K bytes.
- ``DeclareMiningJob.wtxid_list`` holds **wtxids** in internal byte order (renamed from
  ``tx_ids_list`` in PR #171), coinbase excluded; ``coinbase_tx_prefix``/``_suffix`` keep the
  BIP141 marker, flag and witness (§3.7.2).
- ``PushSolution`` is 0x60 with channel_msg = 0 (PR #196 moved it from 1 to 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from sv2.messages.base import Message, register
from sv2.types import B0_16M, B0_32, B0_64K, B0_255, SEQ0_64K, STR0_255, U16, U32, U256


@register(0x0000, 0x50, "AllocateMiningJobToken")
@dataclass(frozen=True)
class AllocateMiningJobToken(Message):
    """§6.4.2, JDC -> JDS."""

    user_identifier: Annotated[str, STR0_255]
    request_id: Annotated[int, U32]


@register(0x0000, 0x51, "AllocateMiningJobToken.Success")
@dataclass(frozen=True)
class AllocateMiningJobTokenSuccess(Message):
    """§6.4.3, JDS -> JDC. SRI names the last field ``coinbase_outputs``; same bytes."""

    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]


@register(0x0000, 0x55, "ProvideMissingTransactions")
@dataclass(frozen=True)
class ProvideMissingTransactions(Message):
    """§6.4.6, JDS -> JDC: 0-indexed positions into ``wtxid_list``; ``request_id`` is the
    DeclareMiningJob's (PR #182)."""

    request_id: Annotated[int, U32]
    unknown_tx_position_list: Annotated[tuple[int, ...], SEQ0_64K(U16)]


@register(0x0000, 0x56, "ProvideMissingTransactions.Success")
@dataclass(frozen=True)
class ProvideMissingTransactionsSuccess(Message):
    """§6.4.7, JDC -> JDS: full transactions, in the requested order."""

    request_id: Annotated[int, U32]
    transaction_list: Annotated[tuple[bytes, ...], SEQ0_64K(B0_16M)]


@register(0x0000, 0x57, "DeclareMiningJob")
@dataclass(frozen=True)
class DeclareMiningJob(Message):
    """§6.4.4, JDC -> JDS (Full-Template mode). Extension 0x0003 appends the
    ``distribution_id`` TLV (:class:`sv2.messages.payouts.DistributionIdTlv`)."""

    request_id: Annotated[int, U32]
    mining_job_token: Annotated[bytes, B0_255]
    version: Annotated[int, U32]
    coinbase_tx_prefix: Annotated[bytes, B0_64K]
    coinbase_tx_suffix: Annotated[bytes, B0_64K]
    wtxid_list: Annotated[tuple[bytes, ...], SEQ0_64K(U256)]
    excess_data: Annotated[bytes, B0_64K]


@register(0x0000, 0x58, "DeclareMiningJob.Success")
@dataclass(frozen=True)
class DeclareMiningJobSuccess(Message):
    """§6.4.5, JDS -> JDC: the token to use in SetCustomMiningJob."""

    request_id: Annotated[int, U32]
    new_mining_job_token: Annotated[bytes, B0_255]


@register(0x0000, 0x59, "DeclareMiningJob.Error")
@dataclass(frozen=True)
class DeclareMiningJobError(Message):
    """§6.4.5, JDS -> JDC. Codes are implementation-defined since PR #194."""

    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]
    error_details: Annotated[bytes, B0_64K]


@register(0x0000, 0x60, "PushSolution")
@dataclass(frozen=True)
class PushSolution(Message):
    """§6.4.9, JDC -> JDS: a solution for the most recent DeclareMiningJob.Success.
    ``prev_hash`` is U256 in internal byte order."""

    extranonce: Annotated[bytes, B0_32]
    prev_hash: Annotated[bytes, U256]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]
    version: Annotated[int, U32]
