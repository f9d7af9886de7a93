"""A transaction output and the money bound (Bitcoin Core ``CTxOut``, ``MAX_MONEY`` of
consensus/amount.h): the primitive every settlement mode, the coinbase builder and the SV2 roles
share."""

from __future__ import annotations

from dataclasses import dataclass

from payouts.tx.compact import compact_size_len, ser_compact_size

MAX_MONEY = 21_000_000 * 100_000_000


@dataclass(frozen=True, slots=True)
class TxOut:
    """A transaction output: ``value`` satoshis locked to ``script`` (a scriptPubKey)."""

    value: int
    script: bytes

    def serialize(self) -> bytes:
        return self.value.to_bytes(8, "little") + ser_compact_size(len(self.script)) + self.script

    @property
    def size(self) -> int:
        """Serialized size in bytes (8-byte value + CompactSize length + script)."""
        return 8 + compact_size_len(len(self.script)) + len(self.script)


__all__ = ["MAX_MONEY", "TxOut"]
