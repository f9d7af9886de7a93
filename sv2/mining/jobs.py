"""A job as the Mining Protocol endpoint hashes it (sv2-spec 05-Mining-Protocol.md §5.1.2,
§5.3.16): the block of a :class:`~sv2.declared_job.DeclaredJob` -- one a JD client declared
(a custom job, §5.1.4) or one the pool built on its own template -- seen through one channel's
extranonce prefix.

A share is checked by rebuilding only what its hash needs, in the order of §5.3.16: the
coinbase txid from the BIP141-stripped prefix, the channel's ``extranonce_prefix``, the miner's
``extranonce`` and the stripped suffix; the merkle root by folding the job's ``merkle_path``;
then the 80-byte header with the miner's version, ntime and nonce. The raw block is built only
for a share that meets the network target (:func:`sv2.block_rebuild.rebuild_block`, the same
function ``PushSolution`` uses), so a block found either way is byte-identical.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from payouts.tx.block import bits_to_target
from payouts.tx.merkle import merkle_path
from sv2.block_rebuild import RebuiltBlock, rebuild_block
from sv2.declared_job import DeclaredCoinbase, DeclaredJob
from sv2.version_bits import VERSION_FIXED_BITS, version_matches

HEADER = struct.Struct("<I32s32sIII")
# Merkle roots kept per job, one per miner extranonce most recently hashed: a standard channel
# (one extranonce) and a miner that finds several shares before it rolls its extranonce fold
# the merkle path once, not once per share. Small, so 10,000 channels' jobs stay small.
ROOT_CACHE = 8


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def stripped_parts(cb: DeclaredCoinbase) -> tuple[bytes, bytes]:
    """The coinbase's prefix and suffix without the BIP141 marker, flag and witness: what its
    txid hashes (§5.3.16 sends these in NewExtendedMiningJob). A coinbase declared without
    marker and flag is already stripped."""
    prefix, suffix = cb.prefix, cb.suffix
    if prefix[4:6] != b"\x00\x01":
        return prefix, suffix
    wlen = len(cb.tx.inputs[0].serialize_witness())
    return prefix[:4] + prefix[6:], suffix[: len(suffix) - 4 - wlen] + suffix[-4:]


@dataclass(frozen=True, slots=True)
class JobParts:
    """What every channel's copy of one job shares (computed once per job, not per channel):
    the stripped coinbase halves and the merkle path over the job's transactions."""

    head: bytes
    tail: bytes
    merkle_path: tuple[bytes, ...]

    @classmethod
    def of(cls, declared: DeclaredJob) -> JobParts:
        head, tail = stripped_parts(declared.coinbase)
        path = merkle_path([bytes(32), *(k.txid for k in declared.txs)], 0)
        return cls(head, tail, tuple(path))


@dataclass(slots=True)
class MiningJob:
    """One job on one channel. ``extranonce_prefix`` is the channel's when the job was made
    (a later SetExtranoncePrefix applies to later jobs only, §5.3.10)."""

    job_id: int
    channel_id: int
    declared: DeclaredJob
    extranonce_prefix: bytes
    min_ntime: int
    parts: JobParts
    version_rolling_allowed: bool = True
    custom: bool = False
    merkle_path: tuple[bytes, ...] = ()
    seen: set[bytes] = field(default_factory=set)  # header hashes credited on this job
    # Copied from ``declared`` once: read for every share.
    miner_extranonce_size: int = 0  # what the miner fills after the channel's prefix
    version: int = 0
    prev_hash: bytes = b""
    bits: int = 0
    revenue: int = 0  # T of the template the job was built (or validated) on
    _midstate: Any = None  # SHA-256 state after the coinbase head and the channel prefix
    network_target: int = 0
    # The version bits a share must keep from the job: the BIP323 fixed bits when the job
    # allows rolling, every bit otherwise (version_ok, inlined on the share path).
    version_mask: int = -1
    _roots: dict[bytes, bytes] | None = None  # merkle root by miner extranonce (ROOT_CACHE)

    def __post_init__(self) -> None:
        d = self.declared
        self._midstate = hashlib.sha256(self.parts.head + self.extranonce_prefix)
        if not self.merkle_path:
            self.merkle_path = self.parts.merkle_path
        self.miner_extranonce_size = d.coinbase.extranonce_size - len(self.extranonce_prefix)
        self.version = d.version & 0xFFFFFFFF
        self.prev_hash, self.bits, self.revenue = d.prev_hash, d.bits, d.revenue
        self.network_target = bits_to_target(d.bits)
        self.version_mask = VERSION_FIXED_BITS if self.version_rolling_allowed else -1

    def coinbase_halves(self) -> tuple[bytes, bytes]:
        """(coinbase_tx_prefix, coinbase_tx_suffix) as NewExtendedMiningJob carries them:
        stripped, the channel's extranonce prefix not included (§5.3.16)."""
        return self.parts.head, self.parts.tail

    def merkle_root(self, extranonce: bytes) -> bytes:
        """The header's merkle root with the miner's ``extranonce`` (§5.3.16): the coinbase
        txid folded with the job's merkle path; the last :data:`ROOT_CACHE` are kept."""
        roots = self._roots
        if roots is None:
            roots = self._roots = {}
        else:
            hit = roots.get(extranonce)
            if hit is not None:
                return hit
        state = self._midstate.copy()
        state.update(extranonce)
        state.update(self.parts.tail)
        h = hashlib.sha256(state.digest()).digest()
        for sibling in self.merkle_path:
            h = sha256d(h + sibling)
        if len(roots) >= ROOT_CACHE:
            roots.clear()
        roots[extranonce] = h
        return h

    def version_ok(self, version: int) -> bool:
        """BIP320/323 rules: the general-purpose bits may roll if the job allows it (§5.3.15,
        §5.3.16); every other bit is the job's."""
        if self.version_rolling_allowed:
            return version_matches(self.version, version)
        return version == self.version

    def share_hash(self, extranonce: bytes, version: int, ntime: int, nonce: int) -> bytes:
        """The header hash (internal byte order) of a share on this job."""
        header = HEADER.pack(
            version, self.prev_hash, self.merkle_root(extranonce), ntime, self.bits, nonce
        )
        return sha256d(header)

    def is_block(self, share_hash: bytes) -> bool:
        return int.from_bytes(share_hash, "little") <= self.network_target

    def block(self, extranonce: bytes, version: int, ntime: int, nonce: int) -> RebuiltBlock:
        """The full block of a share (for one that meets the network target)."""
        return rebuild_block(
            self.declared,
            self.extranonce_prefix + extranonce,
            version=version,
            ntime=ntime,
            nonce=nonce,
        )


__all__ = ["HEADER", "ROOT_CACHE", "JobParts", "MiningJob", "sha256d", "stripped_parts"]
