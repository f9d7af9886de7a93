"""Block headers and blocks: serialization, hash, proof-of-work target.

``BlockHeader`` is ``CBlockHeader`` (primitives/block.h, 80 bytes); its hash is SHA256d of the
serialization (``CBlockHeader::GetHash``). ``bits_to_target`` is ``arith_uint256::SetCompact``
and ``check_pow`` is ``CheckProofOfWork`` without the chain's powLimit (the caller knows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import display_hex, sha256d
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import Tx, TxDecodeError, parse_tx_at, read_count

HEADER_SIZE = 80


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    prev_hash: bytes  # internal byte order
    merkle_root: bytes  # internal byte order
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return (
            (self.version & 0xFFFFFFFF).to_bytes(4, "little")
            + self.prev_hash
            + self.merkle_root
            + self.time.to_bytes(4, "little")
            + self.bits.to_bytes(4, "little")
            + self.nonce.to_bytes(4, "little")
        )

    @classmethod
    def parse(cls, raw: bytes) -> BlockHeader:
        if len(raw) != HEADER_SIZE:
            raise TxDecodeError(f"a block header is 80 bytes, got {len(raw)}")
        le = int.from_bytes
        return cls(
            le(raw[0:4], "little", signed=True),
            raw[4:36],
            raw[36:68],
            le(raw[68:72], "little"),
            le(raw[72:76], "little"),
            le(raw[76:80], "little"),
        )

    @property
    def hash(self) -> bytes:
        """``CBlockHeader::GetHash`` in internal byte order."""
        return sha256d(self.serialize())

    @property
    def hash_hex(self) -> str:
        return display_hex(self.hash)


def bits_to_target(bits: int) -> int:
    """``arith_uint256::SetCompact``; negative or overflowing encodings raise."""
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if bits & 0x00800000 and mantissa:
        raise ValueError("negative compact target")
    target = mantissa >> (8 * (3 - exponent)) if exponent <= 3 else mantissa << (8 * (exponent - 3))
    if target >> 256:
        raise ValueError("compact target overflows 256 bits")
    return target


DIFF1_TARGET = 0xFFFF << 208
"""The target of difficulty 1 (nBits ``0x1d00ffff``), the numerator of Core's ``GetDifficulty``."""


def difficulty_from_bits(bits: int) -> Fraction:
    """The network difficulty of ``bits`` exactly: ``DIFF1_TARGET / target``.

    Bitcoin Core's ``GetDifficulty`` (rpc/blockchain.cpp) computes the same ratio in floating
    point; regtest's ``0x207fffff`` gives 65535/140737471578112 (about 4.66e-10), which no
    integer and no float can carry exactly."""
    target = bits_to_target(bits)
    if target == 0:
        raise ValueError("compact target is zero")
    return Fraction(DIFF1_TARGET, target)


def check_pow(header_hash: bytes, bits: int) -> bool:
    """``CheckProofOfWork``: the hash, read as a little-endian number, is at most the target."""
    target = bits_to_target(bits)
    return target != 0 and int.from_bytes(header_hash, "little") <= target


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...]

    def serialize(self, with_witness: bool = True) -> bytes:
        return (
            self.header.serialize()
            + ser_compact_size(len(self.txs))
            + b"".join(t.serialize(with_witness) for t in self.txs)
        )

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def hash_hex(self) -> str:
        return self.header.hash_hex

    def computed_merkle_root(self) -> bytes:
        return merkle_root([t.txid for t in self.txs])

    @property
    def weight(self) -> int:
        """``GetBlockWeight``: stripped size × 3 + full size (BIP-141)."""
        return len(self.serialize(False)) * 3 + len(self.serialize(True))

    @classmethod
    def parse(cls, raw: bytes) -> Block:
        header = BlockHeader.parse(raw[:HEADER_SIZE])
        n, pos = read_count(raw, HEADER_SIZE, "tx count", 60)
        txs = []
        for _ in range(n):
            tx, pos = parse_tx_at(raw, pos)
            txs.append(tx)
        if pos != len(raw):
            raise TxDecodeError(f"{len(raw) - pos} trailing bytes after the block")
        return cls(header, tuple(txs))


def build_block(header_fields: BlockHeader, txs: Sequence[Tx]) -> Block:
    """A block whose header carries the merkle root of ``txs`` (other fields from the given
    header; its merkle_root is ignored)."""
    h = header_fields
    root = merkle_root([t.txid for t in txs])
    return Block(BlockHeader(h.version, h.prev_hash, root, h.time, h.bits, h.nonce), tuple(txs))
