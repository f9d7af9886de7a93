"""The node interface the JD server, the settlement lifecycle and the demo use.

Two backends implement it: ``bitcoind`` (JSON-RPC to a real node: getblocktemplate, submitblock,
getdeploymentinfo, ...) and ``kernel`` (libbitcoinkernel in-process, an in-memory regtest chain
with a small mempool; it does **not** enforce CTV). Hashes are bytes in internal byte order
(as on the wire), never the reversed display hex.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, runtime_checkable

from payouts.tx.transaction import Tx


@dataclass(frozen=True, slots=True)
class ChainTip:
    height: int
    block_hash: bytes  # internal byte order
    bits: int  # nBits of the NEXT block
    time: int  # header time of the tip
    median_time_past: int


@dataclass(frozen=True, slots=True)
class TemplateTx:
    tx: Tx
    fee: int  # satoshis
    sigops: int  # sigop cost


@dataclass(frozen=True, slots=True)
class BlockTemplate:
    """What ``getblocktemplate`` returns, decoded. ``coinbase_value`` is the revenue T."""

    version: int
    prev_hash: bytes
    height: int
    bits: int
    curtime: int
    coinbase_value: int
    transactions: tuple[TemplateTx, ...]

    @property
    def fees(self) -> int:
        return sum(t.fee for t in self.transactions)


@dataclass(frozen=True, slots=True)
class Utxo:
    """An unspent output in the active chain (``gettxout`` without the mempool)."""

    value: int
    script: bytes
    height: int  # height of the block that created it
    is_coinbase: bool
    confirmations: int  # tip height - height + 1


@dataclass(frozen=True, slots=True)
class MempoolAcceptResult:
    """One entry of ``testmempoolaccept``: ``allowed`` or the reject ``reason``."""

    txid: bytes
    wtxid: bytes
    allowed: bool
    reason: str | None = None
    fee: int | None = None  # satoshis, when allowed
    vsize: int | None = None


class NodeError(Exception):
    """The node could not be reached or refused a request; ``reason`` is the node's word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Node(Protocol):
    """What the engine needs from a Bitcoin node."""

    network: str  # "regtest", "signet", ...

    async def tip(self) -> ChainTip: ...

    async def block_template(self) -> BlockTemplate: ...

    async def submit_block(self, raw_block: bytes) -> str | None:
        """``None`` if the block was accepted (the tip moved to it), else the reject reason."""
        ...

    async def mempool_txs(self, wtxids: Sequence[bytes]) -> list[Tx | None]:
        """Transactions by wtxid from the node's mempool (None where unknown)."""
        ...

    async def send_raw_transaction(self, raw_tx: bytes) -> bytes:
        """Broadcast; returns the txid. Raises NodeError with the node's reason."""
        ...

    async def deployment_active(self, name: str) -> bool:
        """Whether a deployment is active for the next block, e.g. "checktemplateverify"."""
        ...

    async def network_difficulty(self) -> Fraction:
        """The exact difficulty of the next block (its nBits,
        :func:`~payouts.tx.block.difficulty_from_bits`), for share accounting."""
        ...

    # -- what the settlement lifecycle needs (found -> confirmed -> mature -> paid, reorgs) --

    async def block_hash(self, height: int) -> bytes | None:
        """Hash of the active-chain block at ``height`` (None above the tip)."""
        ...

    async def get_block(self, block_hash: bytes) -> bytes | None:
        """Raw serialized block (with witnesses) by hash, None if unknown."""
        ...

    async def block_height(self, block_hash: bytes) -> int | None:
        """Height of ``block_hash`` if it is in the ACTIVE chain, else None (unknown, stale
        or invalidated): how the lifecycle notices that a found block was reorged out."""
        ...

    async def get_utxo(self, txid: bytes, n: int) -> Utxo | None:
        """The output if it is unspent in the active chain (mempool spends ignored)."""
        ...

    async def test_mempool_accept(self, raw_txs: Sequence[bytes]) -> list[MempoolAcceptResult]:
        """Would the node accept these (a package if more than one, parents first)?"""
        ...

    async def submit_package(self, raw_txs: Sequence[bytes]) -> list[bytes]:
        """Submit parents then child together (e.g. a 0-fee TRUC parent and its P2A fee
        bump); returns the txids. Raises NodeError with the node's reason."""
        ...

    async def generate_to_script(self, n: int, script: bytes) -> list[bytes]:
        """Mine ``n`` blocks (regtest) paying the subsidy and fees to ``script``; returns
        their hashes. Mempool transactions are included."""
        ...

    async def invalidate_block(self, block_hash: bytes) -> None:
        """Mark a block invalid and reorg away from it (regtest tests of the rollback path).
        Raises NodeError where a backend cannot."""
        ...

    async def reconsider_block(self, block_hash: bytes) -> None:
        """Undo :meth:`invalidate_block`."""
        ...

    async def aclose(self) -> None:
        """Release the backend (the RPC connection pool, the embedded chainstate)."""
        ...
