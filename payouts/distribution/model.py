"""The distribution data model shared by the JD server, the JD client and settlement.

Field names follow ``SetPayoutDistribution`` of sv2-spec PR #203 (extension 0x0003,
``extensions/0x0003-non-custodial-payouts.md``, head ``04bac85b`` plus the 2026-09-09 change that
gives ``additional_outputs`` fixed amounts): the amounts of the pool payout and the payees are
*weights*, not satoshis; the amounts of additional outputs are satoshis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from payouts.errors import ValidationError, ZeroWeightError
from payouts.tx.compact import compact_size_len, ser_compact_size

MAX_MONEY = 21_000_000 * 100_000_000
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


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


@dataclass(frozen=True, slots=True)
class PoolPayout:
    """The pool payout output: never pruned, absorbs rounding and pruned dust."""

    script: bytes
    weight: int


@dataclass(frozen=True, slots=True)
class Payee:
    """A miner's payout output. ``account`` identifies the miner in the ledger; it never goes
    on the wire (the wire carries only script, weight and dust limit)."""

    script: bytes
    weight: int
    dust_limit: int
    account: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class AdditionalOutput:
    """An output paid exactly ``amount`` satoshis before the weights split the rest."""

    script: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Distribution:
    """One published payout rule. ``distribution_id`` is strictly increasing pool-wide."""

    distribution_id: int
    pool_payout: PoolPayout
    payouts: tuple[Payee, ...] = ()
    additional_outputs: tuple[AdditionalOutput, ...] = ()

    def __post_init__(self) -> None:
        validate_distribution(self)

    @property
    def total_weight(self) -> int:
        return self.pool_payout.weight + sum(p.weight for p in self.payouts)

    def max_outputs_size(self) -> int:
        """Bytes of coinbase outputs this distribution can add (every payee paid): what the JD
        client announces as ``coinbase_output_max_additional_size``."""
        scripts = [self.pool_payout.script, *(p.script for p in self.payouts)]
        scripts += [a.script for a in self.additional_outputs]
        return sum(8 + compact_size_len(len(s)) + len(s) for s in scripts)


def validate_distribution(d: Distribution) -> None:
    """Reject a distribution that no revenue could turn into valid outputs."""
    if not 0 <= d.distribution_id <= U64_MAX:
        raise ValidationError("distribution_id must fit in a U64")
    if d.pool_payout.weight <= 0:
        raise ZeroWeightError("the pool payout weight must be positive (PR #203: weight_P != 0)")
    for i, p in enumerate(d.payouts):
        if p.weight <= 0:
            raise ZeroWeightError(f"payout {i} has weight {p.weight}; weights must be positive")
        if p.weight > U64_MAX:
            raise ValidationError(f"payout {i} weight does not fit the U64 amount field")
        if not 0 <= p.dust_limit <= U32_MAX:
            raise ValidationError(f"payout {i} dust limit {p.dust_limit} is not a U32")
    if d.pool_payout.weight > U64_MAX:
        raise ValidationError("the pool payout weight does not fit the U64 amount field")
    for i, a in enumerate(d.additional_outputs):
        if not 0 <= a.amount <= MAX_MONEY:
            raise ValidationError(f"additional output {i} amount {a.amount} is out of range")
