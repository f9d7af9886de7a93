"""Amounts for a template revenue T: the payout math of sv2-spec PR #203 §5.

With T' = T − Σ additional_outputs.amount and W = weight_P + Σ weight[i]:
``amount[i] = floor(weight[i]·T'/W)``; an amount below ``dust_limits[i]`` is pruned (its value
goes to the pool payout); ``pay_P = T' − Σ paid``. Output order is fixed: pool payout, payees in
distribution order without the pruned ones, additional outputs. Python ints give the ≥128-bit
arithmetic the draft requires.
"""

from __future__ import annotations

from dataclasses import dataclass

from payouts.distribution.model import MAX_MONEY, Distribution, TxOut
from payouts.errors import ValidationError, ZeroRevenueError


@dataclass(frozen=True, slots=True)
class PayoutResult:
    """Outputs in wire order plus the bookkeeping needed by the ledger."""

    outputs: tuple[TxOut, ...]
    pool_amount: int
    payee_amounts: tuple[int, ...]  # per payee in distribution order; 0 where pruned
    pruned: tuple[int, ...]  # indices of pruned payees
    distributable: int  # T' = T − Σ additional

    @property
    def total(self) -> int:
        return sum(o.value for o in self.outputs)


def compute_outputs(distribution: Distribution, revenue: int) -> PayoutResult:
    """Turn weights into satoshis for ``revenue`` (``coinbase_tx_value_remaining``)."""
    if revenue <= 0:
        raise ZeroRevenueError(f"template revenue must be positive, got {revenue}")
    if revenue > MAX_MONEY:
        raise ValidationError(f"template revenue {revenue} exceeds 21M BTC")
    fixed = sum(a.amount for a in distribution.additional_outputs)
    distributable = revenue - fixed
    if distributable < 0:
        raise ValidationError(
            f"additional outputs ({fixed} sat) exceed the template revenue ({revenue} sat)"
        )
    total_weight = distribution.total_weight
    amounts: list[int] = []
    pruned: list[int] = []
    outputs: list[TxOut] = []
    paid = 0
    for i, payee in enumerate(distribution.payouts):
        amount = payee.weight * distributable // total_weight
        if amount < payee.dust_limit:
            pruned.append(i)
            amounts.append(0)
            continue
        amounts.append(amount)
        paid += amount
        outputs.append(TxOut(amount, payee.script))
    pool_amount = distributable - paid
    wire = [TxOut(pool_amount, distribution.pool_payout.script), *outputs]
    wire.extend(TxOut(a.amount, a.script) for a in distribution.additional_outputs)
    return PayoutResult(
        outputs=tuple(wire),
        pool_amount=pool_amount,
        payee_amounts=tuple(amounts),
        pruned=tuple(pruned),
        distributable=distributable,
    )
