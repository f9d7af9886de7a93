"""Payout distributions: weights -> amounts for a revenue T (sv2-spec PR #203 math),
fitting to byte/sigop budgets, and the owed-balance ledger."""

from payouts.distribution.amounts import PayoutResult, compute_outputs
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout

__all__ = [
    "AdditionalOutput",
    "Distribution",
    "Payee",
    "PayoutResult",
    "PoolPayout",
    "compute_outputs",
]
