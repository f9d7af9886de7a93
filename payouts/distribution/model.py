"""The distribution data model shared by the JD server, the JD client and settlement.

Field names follow ``SetPayoutDistribution`` of sv2-spec PR #203 (extension 0x0003,
``extensions/0x0003-non-custodial-payouts.md``, head ``04bac85b`` plus the 2026-09-09 change that
gives ``additional_outputs`` fixed amounts): the amounts of the pool payout and the payees are
*weights*, not satoshis; the amounts of additional outputs are satoshis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any

from payouts.distribution.deferred import Deferred, defer_fields, raw_field, store_field
from payouts.errors import ValidationError, ZeroWeightError
from payouts.tx.compact import compact_size_len
from payouts.tx.txout import MAX_MONEY

if TYPE_CHECKING:  # NumPy is loaded where columns are made: a small distribution needs none
    import numpy as np
    import numpy.typing as npt

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
#: Up to this many payees held as objects, amounts are computed with Python ints alone
#: (payouts.distribution.amounts); beyond, as columns in NumPy. Both give the same integers.
SMALL_PAYEES = 64


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


class PayeeColumns(Deferred[Payee]):
    """The payees of a distribution as columns; the :class:`Payee` tuple is built on first read
    of ``Distribution.payouts``.

    Payee i has ``weights[i]`` and ``dust_limits[i]``, and the script and account at row
    ``rows[i]`` of ``scripts`` and ``accounts`` (row i without ``rows``): the fitter passes its
    candidate columns and rank order, and the gather happens only if someone reads them.
    ``weights`` is any integer array until the distribution has validated it, uint64 after.
    """

    __slots__ = ("_rows", "dust_limits", "weights")

    def __init__(
        self,
        scripts: Sequence[bytes],
        weights: npt.NDArray[Any],
        dust_limits: npt.NDArray[np.int64],
        accounts: Sequence[str | None] | None = None,
        rows: npt.NDArray[np.intp] | None = None,
    ) -> None:
        super().__init__()
        # one attribute, replaced whole: threads reading at once see the gathered rows or the
        # source rows with their index, never a mix
        self._rows: tuple[Sequence[bytes], Sequence[str | None] | None,
                          npt.NDArray[np.intp] | None] = (scripts, accounts, rows)
        self.weights = weights
        self.dust_limits = dust_limits

    @classmethod
    def of(cls, payees: tuple[Payee, ...]) -> PayeeColumns:
        """Columns of validated payee objects (which stay the tuple that readers get)."""
        import numpy as np

        from payouts.distribution.columns import to_u64

        cols = cls(
            [p.script for p in payees],
            to_u64([p.weight for p in payees]),
            np.array([p.dust_limit for p in payees], dtype=np.int64),
            [p.account for p in payees],
        )
        cols._value = payees
        return cols

    def _gathered(self) -> tuple[Sequence[bytes], Sequence[str | None] | None]:
        scripts, accounts, rows = self._rows
        if rows is not None:
            index = rows.tolist()
            scripts = [scripts[i] for i in index]
            accounts = None if accounts is None else [accounts[i] for i in index]
            self._rows = (scripts, accounts, None)
        return scripts, accounts

    @property
    def scripts(self) -> Sequence[bytes]:
        return self._gathered()[0]

    @property
    def accounts(self) -> Sequence[str | None] | None:
        return self._gathered()[1]

    def __len__(self) -> int:
        return len(self.weights)

    def _make(self) -> tuple[Payee, ...]:
        scripts, accounts = self._gathered()
        return tuple(map(Payee, scripts, self.weights.tolist(), self.dust_limits.tolist(),
                         repeat(None) if accounts is None else accounts))


@dataclass(frozen=True, slots=True)
class Distribution:
    """One published payout rule. ``distribution_id`` is strictly increasing pool-wide.

    ``payouts`` may be held as :class:`PayeeColumns` (see :meth:`from_columns`); reading it
    always gives the tuple of :class:`Payee`.
    """

    distribution_id: int
    pool_payout: PoolPayout
    payouts: tuple[Payee, ...] = ()
    additional_outputs: tuple[AdditionalOutput, ...] = ()

    def __post_init__(self) -> None:
        validate_distribution(self)

    @classmethod
    def from_columns(
        cls,
        distribution_id: int,
        pool_payout: PoolPayout,
        payees: PayeeColumns,
        additional_outputs: tuple[AdditionalOutput, ...] = (),
    ) -> Distribution:
        """The same distribution as ``Distribution(distribution_id, pool_payout, payees...)``,
        validated column-wise, without building a :class:`Payee` per payee."""
        d = object.__new__(cls)
        # the frozen dataclass's own way of setting its fields
        object.__setattr__(d, "distribution_id", distribution_id)
        object.__setattr__(d, "pool_payout", pool_payout)
        object.__setattr__(d, "additional_outputs", additional_outputs)
        from payouts.distribution.columns import to_u64

        store_field(d, "payouts", payees)
        validate_distribution(d)
        payees.weights = to_u64(payees.weights)
        return d

    def columns(self) -> PayeeColumns:
        """The payees as columns (made from the :class:`Payee` objects once, then kept)."""
        raw = raw_field(self, "payouts")
        if isinstance(raw, PayeeColumns):
            return raw
        cols = PayeeColumns.of(raw)
        store_field(self, "payouts", cols)
        return cols

    def small(self) -> tuple[Payee, ...] | None:
        """The payees as objects when they are held as objects and few (no columns built: the
        amounts take Python ints alone), else ``None``."""
        raw = raw_field(self, "payouts")
        return raw if isinstance(raw, tuple) and len(raw) <= SMALL_PAYEES else None

    @property
    def total_weight(self) -> int:
        payees = self.small()
        if payees is not None:
            return self.pool_payout.weight + sum(p.weight for p in payees)
        from payouts.distribution.columns import exact_sum

        return self.pool_payout.weight + exact_sum(self.columns().weights)

    def max_outputs_size(self) -> int:
        """Bytes of coinbase outputs this distribution can add (every payee paid): what the JD
        client announces as ``coinbase_output_max_additional_size``."""
        payees = self.small()
        scripts = [self.pool_payout.script,
                   *(self.columns().scripts if payees is None else (p.script for p in payees))]
        scripts += [a.script for a in self.additional_outputs]
        return sum(8 + compact_size_len(len(s)) + len(s) for s in scripts)


defer_fields(Distribution, "payouts")


def _payee_error(i: int, weight: int, dust_limit: int) -> None:
    if weight <= 0:
        raise ZeroWeightError(f"payout {i} has weight {weight}; weights must be positive")
    if weight > U64_MAX:
        raise ValidationError(f"payout {i} weight does not fit the U64 amount field")
    if not 0 <= dust_limit <= U32_MAX:
        raise ValidationError(f"payout {i} dust limit {dust_limit} is not a U32")


def _validate_payee_columns(cols: PayeeColumns) -> None:
    """:func:`_payee_error` for the first bad payee, found column-wise."""
    import numpy as np

    w, d = cols.weights, cols.dust_limits
    bad = (w <= 0) | (d < 0) | (d > U32_MAX)
    if w.dtype == object:
        bad |= w > U64_MAX
    if bad.any():
        i = int(np.argmax(bad))
        _payee_error(i, int(w[i]), int(d[i]))


def validate_distribution(d: Distribution) -> None:
    """Reject a distribution that no revenue could turn into valid outputs."""
    if not 0 <= d.distribution_id <= U64_MAX:
        raise ValidationError("distribution_id must fit in a U64")
    if d.pool_payout.weight <= 0:
        raise ZeroWeightError("the pool payout weight must be positive (PR #203: weight_P != 0)")
    raw = raw_field(d, "payouts")
    if isinstance(raw, PayeeColumns):
        _validate_payee_columns(raw)
    else:
        for i, p in enumerate(raw):
            _payee_error(i, p.weight, p.dust_limit)
    if d.pool_payout.weight > U64_MAX:
        raise ValidationError("the pool payout weight does not fit the U64 amount field")
    for i, a in enumerate(d.additional_outputs):
        if not 0 <= a.amount <= MAX_MONEY:
            raise ValidationError(f"additional output {i} amount {a.amount} is out of range")
