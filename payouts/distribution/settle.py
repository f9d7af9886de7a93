"""What a found block means for each miner and for the owed-balance ledger.

For a block found with fitted distribution D and revenue T (T' = T − Σ additional,
W = D.total_weight), miner i's *fair* amount is ``floor(e_i·T'/W)`` for its earned weight e_i.
Then, per miner: ``paid + credited − repaid − bonus == fair``, where
- a pruned or dropped miner is credited its fair amount (the pool output carried it);
- an included miner is paid ``floor((e_i+b_i)·T'/W)``; what exceeds the fair amount repays its
  debt (debited from the ledger); any excess beyond the debt (rounding of the boost) is a bonus
  the pool gives away.
And for the block: ``Σ paid + pool_keeps + Σ credited − Σ repaid + Σ additional == T``, where
``pool_keeps`` is the pool's own part of its output. This is ARCHITECTURE invariant 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from payouts.distribution.amounts import PayoutResult, compute_outputs
from payouts.distribution.fitting import FittedDistribution
from payouts.distribution.ledger import LedgerEntry


@dataclass(frozen=True, slots=True)
class BlockSettlement:
    result: PayoutResult
    paid: dict[str, int]
    fair: dict[str, int]
    entries: tuple[LedgerEntry, ...]
    pool_keeps: int
    bonus: int

    @property
    def credited(self) -> int:
        return sum(e.amount for e in self.entries if e.amount > 0)

    def credited_to(self, account: str) -> int:
        return sum(e.amount for e in self.entries if e.amount > 0 and e.account == account)

    @property
    def repaid(self) -> int:
        return -sum(e.amount for e in self.entries if e.amount < 0)


def settle_block(
    fitted: FittedDistribution,
    revenue: int,
    ref: str = "",
    balances: Mapping[str, int] | None = None,
) -> BlockSettlement:
    """Settle a block found with ``fitted`` at ``revenue``.

    ``balances`` are the ledger balances now (default: as when the distribution was built); a
    repayment never exceeds the current balance, so two blocks found on one distribution cannot
    repay the same debt twice.
    """
    dist = fitted.distribution
    result = compute_outputs(dist, revenue)
    t_prime, total_weight = result.distributable, dist.total_weight
    paid: dict[str, int] = {}
    fair: dict[str, int] = {}
    entries: list[LedgerEntry] = []
    bonus = 0
    for payee, earned, owed, amount in zip(
        dist.payouts, fitted.earned, fitted.owed, result.payee_amounts, strict=True
    ):
        account = payee.account or payee.script.hex()
        share = earned * t_prime // total_weight
        fair[account] = share
        paid[account] = amount
        if amount == 0:
            if share:
                entries.append(LedgerEntry(account, share, "pruned", ref))
            continue
        extra = amount - share
        current = owed if balances is None else balances.get(account, 0)
        repaid = min(extra, current)
        if repaid:
            entries.append(LedgerEntry(account, -repaid, "repaid", ref))
        bonus += extra - repaid
    for c in fitted.dropped:
        share = c.weight * t_prime // total_weight
        fair[c.account] = share
        paid[c.account] = 0
        if share:
            entries.append(LedgerEntry(c.account, share, "dropped", ref))
    net_credit = sum(e.amount for e in entries)
    return BlockSettlement(
        result=result,
        paid=paid,
        fair=fair,
        entries=tuple(entries),
        pool_keeps=result.pool_amount - net_credit,
        bonus=bonus,
    )
