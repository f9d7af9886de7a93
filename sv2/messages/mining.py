"""The Mining-protocol messages a JD deployment needs: SetCustomMiningJob and its replies
(sv2-spec 05-Mining-Protocol.md §5.3.18-5.3.20; SRI
``sv2/subprotocols/mining/src/set_custom_mining_job.rs``).

They are channel messages (channel_msg = 1 since PR #196), so ``channel_id`` is the first field.
In Coinbase-only mode, extension 0x0003 (PR #203 §6) appends the ``distribution_id`` TLV here.
``coinbase_tx_outputs`` is CompactSize count + TxOuts, with final values (PR #138, #144).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from sv2.messages.base import Message, register
from sv2.types import B0_64K, B0_255, SEQ0_255, STR0_255, U32, U256


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
