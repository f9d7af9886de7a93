"""Amounts for a template revenue T: the payout math of sv2-spec PR #203 §5.

With T' = T − Σ additional_outputs.amount and W = weight_P + Σ weight[i]:
``amount[i] = floor(weight[i]·T'/W)``; an amount below ``dust_limits[i]`` is pruned (its value
goes to the pool payout); ``pay_P = T' − Σ paid``. Output order is fixed: pool payout, payees in
distribution order without the pruned ones, additional outputs. The floors are exact integer
arithmetic over the whole payee column (:func:`~payouts.distribution.columns.floor_mul_div`:
128-bit products in NumPy, Python ints beyond its bounds), as the draft requires; a few payees
held as objects (a distribution read from JSON by the CLI) take Python ints alone, with no
NumPy loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from typing import TYPE_CHECKING, Any

from payouts.distribution.deferred import (
    Deferred,
    LazyTuple,
    defer_fields,
    raw_field,
    store_field,
)
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PayeeColumns
from payouts.errors import UnsatisfiableDistributionError, ValidationError, ZeroRevenueError
from payouts.tx.txout import MAX_MONEY, TxOut

if TYPE_CHECKING:  # NumPy is loaded for the column path alone
    import numpy as np
    import numpy.typing as npt


class OutputColumns(Deferred[TxOut]):
    """The wire-order outputs of a :class:`PayoutResult` as columns; the :class:`TxOut` tuple
    is built on first read of ``PayoutResult.outputs``."""

    __slots__ = ("additional", "amounts", "keep", "payees", "pool", "total")

    def __init__(
        self,
        pool: TxOut,
        payees: PayeeColumns,
        amounts: npt.NDArray[Any],
        keep: npt.NDArray[np.bool_],
        additional: tuple[AdditionalOutput, ...],
        total: int,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.payees = payees
        self.amounts = amounts  # every payee's floor amount; paid where ``keep``
        self.keep = keep
        self.additional = additional
        self.total = total

    def _make(self) -> tuple[TxOut, ...]:
        paid = map(TxOut, self.amounts[self.keep].tolist(),
                   compress(self.payees.scripts, self.keep.tolist()))
        return (self.pool, *paid, *(TxOut(a.amount, a.script) for a in self.additional))


@dataclass(frozen=True, slots=True)
class PayoutResult:
    """Outputs in wire order plus the bookkeeping needed by the ledger.

    ``outputs`` and ``payee_amounts`` of a result from :func:`compute_outputs` are held as
    columns until first read (:class:`OutputColumns`)."""

    outputs: tuple[TxOut, ...]
    pool_amount: int
    payee_amounts: tuple[int, ...]  # per payee in distribution order; 0 where pruned
    pruned: tuple[int, ...]  # indices of pruned payees
    distributable: int  # T' = T − Σ additional

    @property
    def total(self) -> int:
        raw = raw_field(self, "outputs")
        if isinstance(raw, OutputColumns):
            return raw.total
        return sum(o.value for o in self.outputs)


defer_fields(PayoutResult, "outputs", "payee_amounts")


def compute_outputs(distribution: Distribution, revenue: int) -> PayoutResult:
    """Turn weights into satoshis for ``revenue`` (``coinbase_tx_value_remaining``)."""
    if revenue <= 0:
        raise ZeroRevenueError(f"template revenue must be positive, got {revenue}")
    if revenue > MAX_MONEY:
        raise ValidationError(f"template revenue {revenue} exceeds 21M BTC")
    fixed = sum(a.amount for a in distribution.additional_outputs)
    distributable = revenue - fixed
    if distributable <= 0:  # PR #203: F >= T is unsatisfiable (the JD client falls back)
        raise UnsatisfiableDistributionError(
            f"additional outputs ({fixed} sat) reach or exceed the template revenue "
            f"({revenue} sat): F >= T leaves nothing to distribute"
        )
    payees = distribution.small()
    if payees is not None:
        return _small_outputs(distribution, payees, revenue, distributable)
    import numpy as np

    from payouts.distribution.columns import floor_mul_div

    cols = distribution.columns()
    amounts = floor_mul_div(cols.weights, distributable, distribution.total_weight)
    keep = np.asarray(amounts >= cols.dust_limits, dtype=np.bool_)
    paid = int(amounts[keep].sum())
    pool_amount = distributable - paid
    per_payee = np.where(keep, amounts, 0)
    result = PayoutResult(
        outputs=(),
        pool_amount=pool_amount,
        payee_amounts=(),
        pruned=tuple(np.flatnonzero(~keep).tolist()),
        distributable=distributable,
    )
    store_field(result, "outputs", OutputColumns(
        TxOut(pool_amount, distribution.pool_payout.script), cols, amounts, keep,
        distribution.additional_outputs, revenue))
    store_field(result, "payee_amounts", LazyTuple(lambda: tuple(per_payee.tolist())))
    return result


def _small_outputs(distribution: Distribution, payees: tuple[Payee, ...], revenue: int,
                   distributable: int) -> PayoutResult:
    """:func:`compute_outputs` for a few payees held as objects, in Python ints: the same
    floors and the same pruning as the column path (tests/distribution check both agree)."""
    total = distribution.total_weight
    amounts = [p.weight * distributable // total for p in payees]
    kept = [a if a >= p.dust_limit else 0 for a, p in zip(amounts, payees, strict=True)]
    pool_amount = distributable - sum(kept)
    outputs = (TxOut(pool_amount, distribution.pool_payout.script),
               *(TxOut(a, p.script) for a, p in zip(amounts, payees, strict=True)
                 if a >= p.dust_limit),
               *(TxOut(a.amount, a.script) for a in distribution.additional_outputs))
    return PayoutResult(
        outputs=outputs, pool_amount=pool_amount, payee_amounts=tuple(kept),
        pruned=tuple(i for i, (a, p) in enumerate(zip(amounts, payees, strict=True))
                     if a < p.dust_limit),
        distributable=distributable)
