"""An accepted job declaration and the block found on it, below the roles: the JD server
builds a :class:`DeclaredJob` for every ``DeclareMiningJob.Success`` (sv2-spec
06-Job-Declaration-Protocol.md §6.4.5), the pool's Mining Protocol server checks
``SetCustomMiningJob`` against it (:mod:`sv2.custom_job`) and both rebuild its block from a
solution (:mod:`sv2.block_rebuild`), without importing each other.

- :class:`KnownTx`: a transaction with what validation sums precomputed (weight, sigop cost,
  fee when known);
- :class:`DeclaredCoinbase`: the declared coinbase with its extranonce zeroed, and how to put
  a miner's extranonce back;
- :class:`DeclaredJob`: everything a solution needs to become a block, and what the job pays;
- :class:`FoundBlock`: a block the node accepted, with the job it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

from payouts.distribution.fitting import FittedDistribution
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.tx.transaction import WITNESS_SCALE_FACTOR, Tx
from payouts.tx.txout import TxOut


@dataclass(slots=True)
class KnownTx:
    """A transaction the server can put in a block, with what validation needs precomputed."""

    tx: Tx
    txid: bytes
    wtxid: bytes
    weight: int
    sigops: int  # sigop cost: exact for template txs, else 4 × legacy (a lower bound)
    fee: int | None  # None: not known

    @classmethod
    def of(cls, tx: Tx, *, fee: int | None = None, sigops: int | None = None) -> KnownTx:
        return cls(
            tx,
            tx.txid,
            tx.wtxid,
            tx.weight,
            4 * tx.legacy_sigops() if sigops is None else sigops,
            fee,
        )


@dataclass(frozen=True, slots=True)
class DeclaredCoinbase:
    """A declared coinbase with the extranonce zeroed."""

    tx: Tx
    prefix: bytes
    suffix: bytes
    extranonce_size: int

    @property
    def weight(self) -> int:
        """BIP-141 weight from the declared sizes, without re-serializing 500 outputs twice:
        ``parse_declared_coinbase`` required the marker and flag, and the strict parser
        rejects a superfluous (all-empty) witness record, so the declared bytes *are* the
        witness serialization; the base size is that less marker, flag and the witness."""
        total = len(self.prefix) + self.extranonce_size + len(self.suffix)
        base = total - 2 - len(self.tx.inputs[0].serialize_witness())
        return base * (WITNESS_SCALE_FACTOR - 1) + total

    def with_extranonce(self, extranonce: bytes) -> bytes:
        if len(extranonce) != self.extranonce_size:
            raise ValidationError(
                f"extranonce is {len(extranonce)} bytes, the job reserves {self.extranonce_size}"
            )
        return self.prefix + extranonce + self.suffix


@dataclass(frozen=True, slots=True)
class DeclaredJob:
    """An accepted declaration: everything PushSolution needs to rebuild the block."""

    connection_id: int
    request_id: int
    token: bytes  # the DeclareMiningJob.Success token naming this job
    user_identifier: str
    prev_hash: bytes
    bits: int
    version: int  # DeclareMiningJob.version; SetCustomMiningJob may differ in BIP323 bits only
    height: int
    coinbase: DeclaredCoinbase
    txs: tuple[KnownTx, ...]
    revenue: int
    payout_outputs: tuple[TxOut, ...]
    distribution_id: int | None
    mode: str  # "coinbase" | "ctv" | "musig2" | "per-job" | "pool" (base spec)
    distribution: Distribution | None
    fitted: FittedDistribution | None


@dataclass(frozen=True, slots=True)
class FoundBlock:
    """A block the node accepted, rebuilt from a solution on a :class:`DeclaredJob` (the JD
    server passes it to ``on_block``)."""

    block_hash: bytes  # internal byte order
    height: int
    raw_block: bytes
    coinbase: Tx
    job: DeclaredJob

    @property
    def distribution_id(self) -> int | None:
        return self.job.distribution_id

    @property
    def revenue(self) -> int:
        return self.job.revenue


__all__ = ["DeclaredCoinbase", "DeclaredJob", "FoundBlock", "KnownTx"]
