"""Template Distribution messages a JD client needs, extension_type 0x0000, channel_msg = 0
(sv2-spec 07-Template-Distribution-Protocol.md §7, numbered as at sv2-spec
``0f38d51``; SRI ``sv2/subprotocols/template-distribution``).

``NewTemplate.coinbase_tx_outputs`` is **not** CompactSize-prefixed: it is the concatenation of
``coinbase_tx_outputs_count`` TxOuts (§7.2; the witness commitment goes last in the coinbase).
The unmerged ``coinbase_witness`` field of PR #198 is deliberately absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from sv2.messages.base import Message, register
from sv2.types import (
    B0_16M,
    B0_64K,
    B0_255,
    BOOL,
    SEQ0_64K,
    SEQ0_255,
    STR0_255,
    U16,
    U32,
    U64,
    U256,
)


@register(0x0000, 0x70, "CoinbaseOutputConstraints")
@dataclass(frozen=True)
class CoinbaseOutputConstraints(Message):
    """§7.1 (was CoinbaseOutputDataSize; sigops added in PR #86), client -> TP."""

    coinbase_output_max_additional_size: Annotated[int, U32]
    coinbase_output_max_additional_sigops: Annotated[int, U16]


@register(0x0000, 0x71, "NewTemplate")
@dataclass(frozen=True)
class NewTemplate(Message):
    """§7.2, TP -> client. ``coinbase_tx_value_remaining`` is the revenue T of PR #203."""

    template_id: Annotated[int, U64]
    future_template: Annotated[bool, BOOL]
    version: Annotated[int, U32]
    coinbase_tx_version: Annotated[int, U32]
    coinbase_prefix: Annotated[bytes, B0_255]
    coinbase_tx_input_sequence: Annotated[int, U32]
    coinbase_tx_value_remaining: Annotated[int, U64]
    coinbase_tx_outputs_count: Annotated[int, U32]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]
    coinbase_tx_locktime: Annotated[int, U32]
    merkle_path: Annotated[tuple[bytes, ...], SEQ0_255(U256)]


@register(0x0000, 0x72, "SetNewPrevHash")
@dataclass(frozen=True)
class SetNewPrevHash(Message):
    """§7.3, the TDP SetNewPrevHash (the Mining protocol's is 0x20). The spec's ``nBits`` is
    ``n_bits`` in snake_case (as SRI spells it)."""

    template_id: Annotated[int, U64]
    prev_hash: Annotated[bytes, U256]
    header_timestamp: Annotated[int, U32]
    n_bits: Annotated[int, U32]
    target: Annotated[bytes, U256]


@register(0x0000, 0x73, "RequestTransactionData")
@dataclass(frozen=True)
class RequestTransactionData(Message):
    """§7.4, client -> TP."""

    template_id: Annotated[int, U64]


@register(0x0000, 0x74, "RequestTransactionData.Success")
@dataclass(frozen=True)
class RequestTransactionDataSuccess(Message):
    """§7.5, TP -> client: the template's transactions (coinbase excluded)."""

    template_id: Annotated[int, U64]
    excess_data: Annotated[bytes, B0_64K]
    transaction_list: Annotated[tuple[bytes, ...], SEQ0_64K(B0_16M)]


@register(0x0000, 0x75, "RequestTransactionData.Error")
@dataclass(frozen=True)
class RequestTransactionDataError(Message):
    """§7.6, TP -> client (SRI codes ``stale-template-id``, ``template-id-not-found``)."""

    template_id: Annotated[int, U64]
    error_code: Annotated[str, STR0_255]


@register(0x0000, 0x76, "SubmitSolution")
@dataclass(frozen=True)
class SubmitSolution(Message):
    """§7.7, client -> TP. ``coinbase_tx`` is the full coinbase with BIP141 fields."""

    template_id: Annotated[int, U64]
    version: Annotated[int, U32]
    header_timestamp: Annotated[int, U32]
    header_nonce: Annotated[int, U32]
    coinbase_tx: Annotated[bytes, B0_64K]
