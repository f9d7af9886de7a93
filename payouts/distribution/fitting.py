"""Building a distribution from window weights, fitted to the coinbase budgets.

Budgets (sv2-spec 07-Template-Distribution-Protocol.md, CoinbaseOutputConstraints): the
Template Provider reserves ``1168 + 4·size`` WU for ``size`` bytes of additional coinbase
outputs and a sigop-cost budget (a P2PKH output costs 4). The distribution's outputs (pool payout,
payees, additional outputs) must fit both, whatever the revenue turns out to be.

Weights: payee i carries its earned window weight ``e_i`` plus a repayment boost ``b_i`` for what
the ledger says the pool owes it. The pool payout carries the pool fee weight
``F = ceil(Σe·fee/(1−fee))``, plus the earned weight of payees that did not fit (the pool output
pays them through the ledger), minus the boosts. Boosts are taken only from that pool weight, so
``W = F + Σe`` is the same with or without owed balances: repaying a debt never dilutes another
miner. A boost is sized so that at the estimated revenue it repays the debt; repayment capacity
is bounded by the pool weight (it is never below 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.distribution.model import (
    AdditionalOutput,
    Distribution,
    Payee,
    PoolPayout,
)
from payouts.distribution.scripts import dust_limit, output_size, sigop_cost
from payouts.errors import BudgetTooSmallError, ValidationError, ZeroRevenueError, ZeroWeightError


@dataclass(frozen=True, slots=True)
class Candidate:
    """A miner with weight in the current window."""

    account: str
    script: bytes
    weight: int  # earned window weight
    owed: int = 0  # satoshis the ledger says the pool owes this miner


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on the outputs a distribution adds to the coinbase."""

    max_bytes: int  # Σ serialized TxOut sizes (coinbase_output_max_additional_size)
    max_sigops: int = 400  # sigop cost (coinbase_output_max_additional_sigops)


@dataclass(frozen=True, slots=True)
class FittedDistribution:
    """A distribution plus what the ledger needs to settle a block found with it."""

    distribution: Distribution
    earned: tuple[int, ...]  # per payee, in distribution order: earned window weight
    owed: tuple[int, ...]  # per payee: ledger balance when the distribution was built
    dropped: tuple[Candidate, ...]  # did not fit or expected dust: paid via the ledger
    fee_weight: int

    @property
    def accounts(self) -> tuple[str, ...]:
        return tuple(p.account or "" for p in self.distribution.payouts)


WEIGHT_BITS = 64  # SetPayoutDistribution carries each weight in a TxOut's 8-byte amount field


def weight_shift(total_weight: int) -> int:
    """Bits to drop so every weight of a distribution fits its U64 wire field.

    Window weights are exact sums of difficulty × revenue (2^100 and more on mainnet), but PR #203
    puts each weight in a TxOut amount. The pool weight can reach Σe·9999 (a fee just under
    100%), so scaling Σe below 2^50 keeps every weight below 2^64.
    """
    return max(0, total_weight.bit_length() - (WEIGHT_BITS - 14))


def scale_to_u64(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates with weights divided by 2^shift, rounded **up** so no miner with weight drops
    to 0 (relative error below 2^-36 of the window for any miner that matters)."""
    shift = weight_shift(sum(max(c.weight, 0) for c in candidates))
    if shift == 0:
        return list(candidates)
    return [
        Candidate(c.account, c.script, -(-c.weight >> shift) if c.weight > 0 else c.weight, c.owed)
        for c in candidates
    ]


def fee_weight(total_earned: int, fee_bps: int) -> int:
    """Pool weight that yields ``fee_bps`` of the distributable revenue (rounded up)."""
    if not 0 <= fee_bps < 10_000:
        raise ValidationError(f"pool fee must be in [0, 10000) basis points, got {fee_bps}")
    return -(-total_earned * fee_bps // (10_000 - fee_bps))


def fit_distribution(
    distribution_id: int,
    pool_script: bytes,
    candidates: Sequence[Candidate],
    *,
    fee_bps: int,
    budget: Budget,
    estimated_revenue: int,
    additional_outputs: Sequence[AdditionalOutput] = (),
) -> FittedDistribution:
    """Choose the payees that fit and weight them.

    Order of preference: miners the pool owes money to (largest debt first), then by earned
    weight (largest first), ties by account name, so every party computes the same result.
    A candidate whose expected amount at ``estimated_revenue`` is below its dust limit is not
    given an output (it would be pruned anyway) and is credited through the ledger instead.
    """
    if estimated_revenue <= 0:
        raise ZeroRevenueError("the estimated revenue must be positive")
    candidates = scale_to_u64(candidates)
    seen: set[str] = set()
    for c in candidates:
        if c.weight < 0 or c.owed < 0:
            raise ValidationError(f"candidate {c.account} has a negative weight or balance")
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
    fee_w = fee_weight(total_earned, fee_bps)
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
        script = c.script
        size, sigops, dust = output_size(script), sigop_cost(script), dust_limit(script)
        expected = c.weight * distributable // total_weight + c.owed
        fits = used_bytes + size <= budget.max_bytes and used_sigops + sigops <= budget.max_sigops
        if fits and expected >= dust:
            chosen.append(c)
            dusts.append(dust)
            used_bytes += size
            used_sigops += sigops
        elif c.weight:
            dropped.append(c)

    # The pool weight pays for the dropped payees and funds the repayment boosts.
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
    # A payee whose whole weight is a boost still needs weight > 0: guaranteed, since chosen
    # candidates have weight > 0 or owed > 0 (then boost > 0 unless capacity ran out).
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
