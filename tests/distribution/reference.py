"""The per-object reference of fitting and PR #203 amounts: the straightforward algorithm the
columnar code in ``payouts/distribution`` must match exactly (same outputs, order, pruning,
boosts, dropped lists and errors). Property tests compare the two; ``bench_settlement`` times
this as the naive baseline. Only the data classes and script helpers come from the package.
"""

from __future__ import annotations

from collections.abc import Sequence

from payouts.distribution.amounts import PayoutResult
from payouts.distribution.fitting import Budget, Candidate, FittedDistribution
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.errors import (
    BudgetTooSmallError,
    UnsatisfiableDistributionError,
    ValidationError,
    ZeroRevenueError,
    ZeroWeightError,
)
from payouts.tx.output_scripts import dust_limit, output_size, sigop_cost
from payouts.tx.txout import MAX_MONEY, TxOut


def reference_outputs(distribution: Distribution, revenue: int) -> PayoutResult:
    """sv2-spec PR #203 §5, one payee at a time."""
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
    total_weight = distribution.pool_payout.weight + sum(p.weight for p in distribution.payouts)
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
    return PayoutResult(tuple(wire), pool_amount, tuple(amounts), tuple(pruned), distributable)


def reference_fit(
    distribution_id: int,
    pool_script: bytes,
    candidates: Sequence[Candidate],
    *,
    fee_bps: int,
    budget: Budget,
    estimated_revenue: int,
    additional_outputs: Sequence[AdditionalOutput] = (),
) -> FittedDistribution:
    """The fitting rules of ``payouts/distribution/fitting.py``, one candidate at a time."""
    if estimated_revenue <= 0:
        raise ZeroRevenueError("the estimated revenue must be positive")
    shift = max(0, sum(max(c.weight, 0) for c in candidates).bit_length() - 50)
    if shift:
        candidates = [
            Candidate(c.account, c.script, -(-c.weight >> shift) if c.weight > 0 else c.weight,
                      c.owed)
            for c in candidates
        ]
    seen: set[str] = set()
    for c in candidates:
        if c.weight < 0 or c.owed < 0:
            raise ValidationError(f"candidate {c.account} has a negative weight or balance")
        if c.owed > MAX_MONEY:
            raise ValidationError(f"candidate {c.account} is owed {c.owed} sat, over 21M BTC")
        if c.account in seen:
            raise ValidationError(f"candidate {c.account} appears twice", code="duplicate-key")
        seen.add(c.account)
    base_bytes = output_size(pool_script) + sum(output_size(a.script) for a in additional_outputs)
    base_sigops = sigop_cost(pool_script) + sum(sigop_cost(a.script) for a in additional_outputs)
    if base_bytes > budget.max_bytes or base_sigops > budget.max_sigops:
        raise BudgetTooSmallError(
            f"the budget ({budget.max_bytes} bytes, {budget.max_sigops} sigops) cannot hold "
            f"even the pool payout and additional outputs ({base_bytes} bytes, "
            f"{base_sigops} sigops)"
        )
    total_earned = sum(c.weight for c in candidates)
    if not 0 <= fee_bps < 10_000:
        raise ValidationError(f"pool fee must be in [0, 10000) basis points, got {fee_bps}")
    fee_w = -(-total_earned * fee_bps // (10_000 - fee_bps))
    total_weight = total_earned + fee_w
    if total_weight == 0:
        raise ZeroWeightError("the window has no weight and the pool fee weight is 0")
    distributable = estimated_revenue - sum(a.amount for a in additional_outputs)
    if distributable <= 0:
        raise ValidationError("additional outputs use up the whole estimated revenue")

    ranked = sorted(candidates, key=lambda c: (-c.owed, -c.weight, c.account))
    chosen: list[Candidate] = []
    dusts: list[int] = []
    dropped: list[Candidate] = []
    used_bytes, used_sigops = base_bytes, base_sigops
    for c in ranked:
        if c.weight == 0 and c.owed == 0:
            continue
        size, sigops, dust = output_size(c.script), sigop_cost(c.script), dust_limit(c.script)
        expected = c.weight * distributable // total_weight + c.owed
        fits = used_bytes + size <= budget.max_bytes and used_sigops + sigops <= budget.max_sigops
        if fits and expected >= dust:
            chosen.append(c)
            dusts.append(dust)
            used_bytes += size
            used_sigops += sigops
        elif c.weight:
            dropped.append(c)

    pool_weight = fee_w + sum(c.weight for c in dropped)
    capacity = max(pool_weight - 1, 0)
    boosts = []
    for c in chosen:
        want = -(-c.owed * total_weight // distributable) if c.owed else 0
        boost = min(want, capacity)
        capacity -= boost
        boosts.append(boost)
    pool_weight -= sum(boosts)
    payees = [
        Payee(c.script, c.weight + boost, dust, c.account)
        for c, boost, dust in zip(chosen, boosts, dusts, strict=True)
    ]
    kept = [(p, c) for p, c in zip(payees, chosen, strict=True) if p.weight > 0]
    dist = Distribution(
        distribution_id=distribution_id,
        pool_payout=PoolPayout(pool_script, max(pool_weight, 1)),
        payouts=tuple(p for p, _ in kept),
        additional_outputs=tuple(additional_outputs),
    )
    return FittedDistribution(
        distribution=dist,
        earned=tuple(c.weight for _, c in kept),
        owed=tuple(c.owed for _, c in kept),
        dropped=tuple(dropped),
        fee_weight=fee_w,
    )
