"""Rebuilding the block of a declared job from a miner's solution, as a pure function below the
roles: the JD server does it for ``PushSolution`` (sv2-spec 06-Job-Declaration-Protocol.md
§6.4.9) and the pool's Mining Protocol server for a share on a custom job
(05-Mining-Protocol.md §5.3.18), neither importing the other.

The block is the job's header fields with the miner's (version, ntime, nonce), the declared
coinbase with the miner's extranonce in its reserved place, and the declared transactions in
their declared order. Whether the header meets its target is :meth:`RebuiltBlock.meets_target`;
the raw block (a few MB for a full one) is only serialized when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from payouts.tx.block import BlockHeader, check_pow
from payouts.tx.compact import ser_compact_size
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import Tx
from sv2.declared_job import DeclaredJob, KnownTx


@dataclass(frozen=True, slots=True)
class RebuiltBlock:
    """A declared job's block with a miner's header fields and extranonce."""

    header: BlockHeader
    coinbase: Tx
    raw_coinbase: bytes  # as declared, the extranonce filled in (BIP-141 fields kept)
    txs: tuple[KnownTx, ...]

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
                *(k.tx.serialize() for k in self.txs),
            ]
        )


def rebuild_block(
    job: DeclaredJob, extranonce: bytes, *, version: int, ntime: int, nonce: int
) -> RebuiltBlock:
    """The block of ``job`` with the miner's ``extranonce`` (exactly the job's
    ``extranonce_size``, else :class:`~payouts.errors.ValidationError`) and header fields;
    prev hash and nBits are the job's. ``version`` goes in as the U32 the miner sent
    (:meth:`BlockHeader.serialize` writes ``version & 0xFFFFFFFF``)."""
    raw_cb = job.coinbase.with_extranonce(extranonce)
    coinbase = Tx.parse(raw_cb)
    root = merkle_root([coinbase.txid, *(k.txid for k in job.txs)])
    header = BlockHeader(version, job.prev_hash, root, ntime, job.bits, nonce)
    return RebuiltBlock(header, coinbase, raw_cb, job.txs)


__all__ = ["RebuiltBlock", "rebuild_block"]
