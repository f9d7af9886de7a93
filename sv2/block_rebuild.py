"""Rebuilding the block of a declared job from a miner's solution, as a pure function below the
roles: the JD server does it for ``PushSolution`` (sv2-spec 06-Job-Declaration-Protocol.md
§6.4.9), the pool's Mining Protocol server for a share on a custom job (05-Mining-Protocol.md
§5.3.18) and our Template Provider for ``SubmitSolution`` (07-Template-Distribution-Protocol.md
§7.7, :func:`assemble_block`), none importing another.

The block is the job's header fields with the miner's (version, ntime, nonce), the declared
coinbase with the miner's extranonce in its reserved place, and the declared transactions in
their declared order. Whether the header meets its target is :meth:`RebuiltBlock.meets_target`;
the raw block (a few MB for a full one) is only serialized when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.tx.block import BlockHeader, check_pow
from payouts.tx.compact import ser_compact_size
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import Tx
from sv2.declared_job import DeclaredJob


@dataclass(frozen=True, slots=True)
class RebuiltBlock:
    """A block put together from a solution: header, coinbase, transactions."""

    header: BlockHeader
    coinbase: Tx
    raw_coinbase: bytes  # as the miner's job has it (BIP-141 fields kept)
    txs: tuple[Tx, ...]

    @property
    def block_hash(self) -> bytes:
        """Internal byte order."""
        return self.header.hash

    def meets_target(self) -> bool:
        """Whether the header hash meets its own nBits (``CheckProofOfWork``); an nBits that
        decodes to no valid target does not."""
        try:
            return check_pow(self.block_hash, self.header.bits)
        except ValueError:
            return False

    def serialize(self) -> bytes:
        """The raw block: header, transaction count, the coinbase, the transactions."""
        return b"".join(
            [
                self.header.serialize(),
                ser_compact_size(len(self.txs) + 1),
                self.raw_coinbase,
                *(tx.serialize() for tx in self.txs),
            ]
        )


def assemble_block(
    raw_coinbase: bytes,
    txids: Sequence[bytes],
    txs: Sequence[Tx],
    *,
    version: int,
    prev_hash: bytes,
    ntime: int,
    bits: int,
    nonce: int,
) -> RebuiltBlock:
    """The block of a coinbase (raw, as the miner has it), the job's transactions (``txids``
    theirs, in block order) and the header fields; the merkle root is computed here.
    ``version`` goes in as the U32 the miner sent (:meth:`BlockHeader.serialize` writes
    ``version & 0xFFFFFFFF``). A coinbase that does not parse raises
    :class:`~payouts.tx.transaction.TxDecodeError` (or ``ValueError``)."""
    coinbase = Tx.parse(raw_coinbase)
    root = merkle_root([coinbase.txid, *txids])
    header = BlockHeader(version, prev_hash, root, ntime, bits, nonce)
    return RebuiltBlock(header, coinbase, raw_coinbase, tuple(txs))


def rebuild_block(
    job: DeclaredJob, extranonce: bytes, *, version: int, ntime: int, nonce: int
) -> RebuiltBlock:
    """The block of the declared ``job`` with the miner's ``extranonce`` (exactly the job's
    ``extranonce_size``, else :class:`~payouts.errors.ValidationError`) and header fields;
    prev hash and nBits are the job's."""
    return assemble_block(
        job.coinbase.with_extranonce(extranonce),
        [k.txid for k in job.txs],
        [k.tx for k in job.txs],
        version=version,
        prev_hash=job.prev_hash,
        ntime=ntime,
        bits=job.bits,
        nonce=nonce,
    )


__all__ = ["RebuiltBlock", "assemble_block", "rebuild_block"]
