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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from payouts.distribution.amounts import OutputColumns, PayoutResult, compute_outputs
from payouts.distribution.columns import (
    Deferred,
    defer_fields,
    floor_mul_div,
    raw_field,
    store_field,
)
from payouts.distribution.fitting import DroppedColumns, FittedDistribution, IntColumn
from payouts.distribution.ledger import LedgerEntry


def int_column(values: Sequence[int]) -> npt.NDArray[Any]:
    """Integers as int64, or as Python ints (dtype object) when one does not fit: exact."""
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return np.array(values, dtype=object)


def fitted_column(fitted: FittedDistribution, name: str) -> npt.NDArray[Any]:
    """``fitted.earned`` or ``fitted.owed`` as an integer column, without building the tuple
    when the fit left it as one."""
    raw = raw_field(fitted, name)
    return raw.values if isinstance(raw, IntColumn) else int_column(getattr(fitted, name))


def dropped_columns(fitted: FittedDistribution) -> tuple[
        Sequence[str], Sequence[bytes], npt.NDArray[Any], npt.NDArray[Any]]:
    """(accounts, scripts, weights, owed) of ``fitted.dropped``, without building the
    :class:`~payouts.distribution.fitting.Candidate` objects when the fit left them as columns."""
    raw = raw_field(fitted, "dropped")
    if isinstance(raw, DroppedColumns):
        return raw.columns()
    dropped = fitted.dropped
    return ([c.account for c in dropped], [c.script for c in dropped],
            int_column([c.weight for c in dropped]), int_column([c.owed for c in dropped]))


def payee_keys(fitted: FittedDistribution) -> Sequence[str]:
    """The ledger key of every payee: its account, or its script in hex when it has none."""
    cols = fitted.distribution.columns()
    accounts = cols.accounts
    if accounts is not None and all(accounts):
        return accounts  # type: ignore[return-value]  # all() just ruled out None and ""
    if accounts is None:
        return [s.hex() for s in cols.scripts]
    return [a or s.hex() for a, s in zip(accounts, cols.scripts, strict=True)]


def _shares(weights: npt.NDArray[Any], num: int, den: int) -> npt.NDArray[Any]:
    """``floor(w·num/den)`` per weight; negative weights (never from a fit) as Python ints."""
    if weights.dtype == object or (len(weights) and int(weights.min()) < 0):
        return np.array([w * num // den for w in weights.tolist()], dtype=object)
    return floor_mul_div(weights.astype(np.uint64), num, den)


def _payee_amounts(result: PayoutResult) -> npt.NDArray[Any]:
    raw = raw_field(result, "outputs")
    if isinstance(raw, OutputColumns):
        return np.where(raw.keep, raw.amounts, 0)
    return int_column(result.payee_amounts)


class SettlementEntries(Deferred[LedgerEntry]):
    """A block's ledger entries: the few explicit ones (repaid, pruned), then one "dropped"
    credit per miner that had no room in the coinbase, kept as columns (up to the whole pool:
    the store writes them without making an object per miner)."""

    __slots__ = ("dropped_accounts", "dropped_amounts", "dropped_rows", "explicit", "ref")

    def __init__(self, explicit: tuple[LedgerEntry, ...], dropped_accounts: Sequence[str],
                 dropped_amounts: Sequence[int], ref: str,
                 dropped_rows: Sequence[int] | None = None) -> None:
        super().__init__()
        self.explicit = explicit
        self.dropped_accounts = dropped_accounts
        self.dropped_amounts = dropped_amounts
        self.ref = ref
        # which rows of the fitted distribution's dropped columns these are (None: all)
        self.dropped_rows = dropped_rows

    def _make(self) -> tuple[LedgerEntry, ...]:
        ref = self.ref
        return (*self.explicit, *(LedgerEntry(a, s, "dropped", ref) for a, s in zip(
            self.dropped_accounts, self.dropped_amounts, strict=True)))


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


defer_fields(BlockSettlement, "entries")


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
    accounts = payee_keys(fitted)
    earned = fitted_column(fitted, "earned")
    if len(earned) != len(accounts) or len(fitted_column(fitted, "owed")) != len(accounts):
        raise ValueError("earned and owed must have one entry per payee")
    # Column-wise, the same as per payee: fair = floor(e·T'/W); a payee paid 0 is credited its
    # fair share ("pruned"); one paid more repays min(extra, balance) and the rest is a bonus.
    share = _shares(earned, t_prime, total_weight)
    amount = _payee_amounts(result)
    fair = dict(zip(accounts, share.tolist(), strict=True))
    paid = dict(zip(accounts, amount.tolist(), strict=True))
    if balances is None:
        current = fitted_column(fitted, "owed")
    else:
        current = int_column(list(map(balances.get, accounts, repeat(0))))
    included = amount != 0
    extra = np.where(included, amount - share, 0)
    repaid = np.where(included, np.minimum(extra, current), 0)
    bonus = int((extra - repaid).sum())
    entries: list[LedgerEntry] = []
    keys = list(accounts)
    share_l, repaid_l = share.tolist(), repaid.tolist()
    for i in np.flatnonzero((~included & (share != 0)) | (repaid != 0)).tolist():
        if included[i]:
            entries.append(LedgerEntry(keys[i], -repaid_l[i], "repaid", ref))
        else:
            entries.append(LedgerEntry(keys[i], share_l[i], "pruned", ref))
    d_accounts, _, d_weights, _ = dropped_columns(fitted)
    d_shares = _shares(d_weights, t_prime, total_weight)
    d_share = d_shares.tolist()
    fair.update(zip(d_accounts, d_share, strict=True))
    paid.update(zip(d_accounts, repeat(0)))
    nonzero = np.flatnonzero(d_shares != 0).tolist() if len(d_share) else []
    kept_rows: list[int] | None = None
    if len(nonzero) == len(d_share):
        kept_accounts, kept_amounts = d_accounts, d_share
    else:
        kept_accounts = [d_accounts[i] for i in nonzero]
        kept_amounts = [d_share[i] for i in nonzero]
        kept_rows = nonzero
    net_credit = sum(e.amount for e in entries) + sum(kept_amounts)
    settlement = BlockSettlement(
        result=result,
        paid=paid,
        fair=fair,
        entries=(),
        pool_keeps=result.pool_amount - net_credit,
        bonus=bonus,
    )
    store_field(settlement, "entries",
                SettlementEntries(tuple(entries), kept_accounts, kept_amounts, ref, kept_rows))
    return settlement
