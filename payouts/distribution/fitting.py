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

The whole fit works on columns (issue #2: 100,000 candidates within the 100 ms budget of a
distribution step): one ranking sort, output costs classified for all scripts at once, exact
expected amounts over the weight column, and a greedy fill done as prefix sums. The resulting
distribution and its ledger tuples are built as objects only when someone reads them.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from payouts.distribution.columns import (
    I64,
    Deferred,
    defer_fields,
    floor_mul_div,
    store_field,
    to_u64,
)
from payouts.distribution.model import AdditionalOutput, Distribution, PayeeColumns, PoolPayout
from payouts.errors import BudgetTooSmallError, ValidationError, ZeroRevenueError, ZeroWeightError
from payouts.tx.output_scripts import output_costs, output_size, sigop_cost
from payouts.tx.txout import MAX_MONEY


@dataclass(frozen=True, slots=True)
class Candidate:
    """A miner with weight in the current window."""

    account: str
    script: bytes
    weight: int  # earned window weight
    owed: int = 0  # satoshis the ledger says the pool owes this miner


@dataclass(frozen=True, slots=True)
class CandidateColumns:
    """Candidates as columns, row i being ``Candidate(accounts[i], scripts[i], weights[i],
    owed[i])``: what the accountant's weights and the ledger give without building an object
    per miner."""

    accounts: Sequence[str]
    scripts: Sequence[bytes]
    weights: Sequence[int]  # earned window weights, exact (any size)
    owed: Sequence[int]
    # The store's miner ids, when the caller knows them (the service does): carried to the
    # dropped candidates so a block's ledger lines need no account lookup. Not part of the
    # distribution (compare=False): two fits of the same candidates are equal with or without.
    miner_ids: Sequence[int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n = len(self.accounts)
        if not len(self.scripts) == len(self.weights) == len(self.owed) == n:
            raise ValidationError("candidate columns have different lengths")
        if self.miner_ids is not None and len(self.miner_ids) != n:
            raise ValidationError("candidate columns have different lengths")

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> CandidateColumns:
        return cls(
            [c.account for c in candidates],
            [c.script for c in candidates],
            [c.weight for c in candidates],
            [c.owed for c in candidates],
        )

    def __len__(self) -> int:
        return len(self.accounts)


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on the outputs a distribution adds to the coinbase."""

    max_bytes: int  # Σ serialized TxOut sizes (coinbase_output_max_additional_size)
    max_sigops: int = 400  # sigop cost (coinbase_output_max_additional_sigops)


@dataclass(frozen=True, slots=True)
class FittedDistribution:
    """A distribution plus what the ledger needs to settle a block found with it.

    From :func:`fit_distribution`, ``earned``, ``owed`` and ``dropped`` are held as columns and
    become tuples on first read."""

    distribution: Distribution
    earned: tuple[int, ...]  # per payee, in distribution order: earned window weight
    owed: tuple[int, ...]  # per payee: ledger balance when the distribution was built
    dropped: tuple[Candidate, ...]  # did not fit or expected dust: paid via the ledger
    fee_weight: int

    @property
    def accounts(self) -> tuple[str, ...]:
        accounts = self.distribution.columns().accounts
        if accounts is None:
            return ("",) * len(self.distribution.columns())
        return tuple(a or "" for a in accounts)


defer_fields(FittedDistribution, "earned", "owed", "dropped")


class DroppedColumns(Deferred[Candidate]):
    """The dropped candidates (rows ``rows`` of the scaled candidate columns, in rank order)."""

    __slots__ = ("_columns", "_owed", "_picked", "_weights", "rows")

    def __init__(self, columns: CandidateColumns, weights: I64, owed: I64,
                 rows: npt.NDArray[np.intp]) -> None:
        super().__init__()
        self._columns, self._weights, self._owed, self.rows = columns, weights, owed, rows
        self._picked: tuple[list[str], list[bytes], I64, I64] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self) -> tuple[list[str], list[bytes], I64, I64]:
        """(accounts, scripts, weights, owed) of the dropped rows, for column readers (made
        once: a block's settlement reads them several times, up to the whole pool)."""
        if self._picked is None:
            rows = self.rows
            accounts, scripts = self._columns.accounts, self._columns.scripts
            if len(rows) == len(accounts) and (len(rows) == 0 or (
                    rows[0] == 0 and bool((np.diff(rows) == 1).all()))):
                picked_a, picked_s = list(accounts), list(scripts)  # every row, in order
            else:
                take = operator.itemgetter(*rows.tolist()) if len(rows) > 1 else None
                if take is not None:
                    picked_a, picked_s = list(take(accounts)), list(take(scripts))
                else:
                    picked_a = [accounts[int(r)] for r in rows]
                    picked_s = [scripts[int(r)] for r in rows]
            self._picked = (picked_a, picked_s, self._weights[rows], self._owed[rows])
        return self._picked

    def miner_ids(self) -> list[int] | None:
        """The store's ids of the dropped rows, when the candidates carried them."""
        ids = self._columns.miner_ids
        if ids is None:
            return None
        picked: list[int] = np.asarray(ids, dtype=np.int64)[self.rows].tolist()
        return picked

    def _make(self) -> tuple[Candidate, ...]:
        accounts, scripts, weights, owed = self.columns()
        return tuple(map(Candidate, accounts, scripts, weights.tolist(), owed.tolist()))


class IntColumn(Deferred[int]):
    """A tuple of ints held as an integer array (``values``) until read as a tuple."""

    __slots__ = ("values",)

    def __init__(self, values: npt.NDArray[Any]) -> None:
        super().__init__()
        self.values = values

    def _make(self) -> tuple[int, ...]:
        return tuple(self.values.tolist())


WEIGHT_BITS = 64  # SetPayoutDistribution carries each weight in a TxOut's 8-byte amount field


def weight_shift(total_weight: int) -> int:
    """Bits to drop so every weight of a distribution fits its U64 wire field.

    Window weights are exact sums of difficulty × revenue (2^100 and more on mainnet), but PR #203
    puts each weight in a TxOut amount. The pool weight can reach Σe·9999 (a fee just under
    100%), so scaling Σe below 2^50 keeps every weight below 2^64.
    """
    return max(0, total_weight.bit_length() - (WEIGHT_BITS - 14))


def fee_weight(total_earned: int, fee_bps: int) -> int:
    """Pool weight that yields ``fee_bps`` of the distributable revenue (rounded up)."""
    if not 0 <= fee_bps < 10_000:
        raise ValidationError(f"pool fee must be in [0, 10000) basis points, got {fee_bps}")
    return -(-total_earned * fee_bps // (10_000 - fee_bps))


def _checked_owed(columns: CandidateColumns) -> I64:
    """The owed column, once every candidate is valid: the first one (input order) with a
    negative weight or balance, a balance above 21M BTC, or an account seen before, is an
    error."""
    weights, accounts = columns.weights, columns.accounts
    try:
        owed = np.array(columns.owed, dtype=np.int64)
    except OverflowError:
        owed = None
    if owed is not None and (
        not len(owed)
        or (min(weights) >= 0 and owed.min() >= 0 and owed.max() <= MAX_MONEY
            and len(set(accounts)) == len(accounts))
    ):
        return owed
    seen: set[str] = set()
    for account, weight, balance in zip(accounts, weights, columns.owed, strict=True):
        if weight < 0 or balance < 0:
            raise ValidationError(f"candidate {account} has a negative weight or balance")
        if balance > MAX_MONEY:
            raise ValidationError(f"candidate {account} is owed {balance} sat, over 21M BTC")
        if account in seen:
            raise ValidationError(f"candidate {account} appears twice", code="duplicate-key")
        seen.add(account)
    raise AssertionError("unreachable: the fast check found a bad candidate")


def _scaled_weights(weights: Sequence[int]) -> I64:
    """Weights (≥ 0) divided by 2^shift, rounded **up** so no miner with weight drops to 0
    (relative error below 2^-36 of the window for any miner that matters); all below 2^50."""
    shift = weight_shift(sum(weights))
    if not shift:
        return np.array(weights, dtype=np.int64)
    round_up = (1 << shift) - 1
    # (w + round_up) >> shift, mapped in C over Python ints of any size
    scaled = map(operator.rshift, map(operator.add, weights, repeat(round_up)), repeat(shift))
    return np.fromiter(scaled, dtype=np.int64, count=len(weights))


def _rank(weights: I64, owed: I64, accounts: Sequence[str]) -> npt.NDArray[np.intp]:
    """Row order: largest debt first, then largest weight, ties by account name."""
    # Rows with equal (debt, weight) are put in account order below, so the first sort need
    # not be stable; the second must keep the weight order within each debt.
    order = np.argsort(-weights)
    if owed.any():
        order = order[np.argsort(-owed[order], kind="stable")]
    w, o = weights[order], owed[order]
    tie = (w[1:] == w[:-1]) & (o[1:] == o[:-1])
    if tie.any():
        edges = np.diff(np.concatenate(([0], tie.astype(np.int8), [0])))
        for start, end in zip(np.flatnonzero(edges == 1).tolist(),
                              np.flatnonzero(edges == -1).tolist(), strict=True):
            run = order[start : end + 1].tolist()
            order[start : end + 1] = sorted(run, key=accounts.__getitem__)
    return order


def _fill(sizes: I64, sigops: I64, room_bytes: int, room_sigops: int) -> npt.NDArray[np.bool_]:
    """Greedy in order: take each item that still fits both budgets.

    Done as prefix sums: an item that does not fit now never will (the room only shrinks), so
    each round drops the items too big for the room left, takes the longest prefix of the rest
    whose running sums fit, and resumes after the first item that did not fit. The items that
    stop a round are ever smaller (in bytes or in sigops), so rounds are few."""
    taken = np.zeros(len(sizes), dtype=np.bool_)
    pos = 0
    while pos < len(sizes):
        rows = pos + np.flatnonzero((sizes[pos:] <= room_bytes) & (sigops[pos:] <= room_sigops))
        if not rows.size:
            break
        used_bytes, used_sigops = np.cumsum(sizes[rows]), np.cumsum(sigops[rows])
        k = int(np.count_nonzero((used_bytes <= room_bytes) & (used_sigops <= room_sigops)))
        taken[rows[:k]] = True
        room_bytes -= int(used_bytes[k - 1])
        room_sigops -= int(used_sigops[k - 1])
        if k == rows.size:
            break
        pos = int(rows[k]) + 1
    return taken


def fit_distribution(
    distribution_id: int,
    pool_script: bytes,
    candidates: Sequence[Candidate] | CandidateColumns,
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
    columns = candidates if isinstance(candidates, CandidateColumns) else (
        CandidateColumns.of(candidates))
    owed = _checked_owed(columns)
    base_bytes = output_size(pool_script) + sum(output_size(a.script) for a in additional_outputs)
    base_sigops = sigop_cost(pool_script) + sum(sigop_cost(a.script) for a in additional_outputs)
    if base_bytes > budget.max_bytes or base_sigops > budget.max_sigops:
        raise BudgetTooSmallError(
            f"the budget ({budget.max_bytes} bytes, {budget.max_sigops} sigops) cannot hold "
            f"even the pool payout and additional outputs ({base_bytes} bytes, "
            f"{base_sigops} sigops)"
        )
    weights = _scaled_weights(columns.weights)
    total_earned = int(weights.sum())
    fee_w = fee_weight(total_earned, fee_bps)
    total_weight = total_earned + fee_w
    if total_weight == 0:
        raise ZeroWeightError("the window has no weight and the pool fee weight is 0")

    distributable = estimated_revenue - sum(a.amount for a in additional_outputs)
    if distributable <= 0:
        raise ValidationError("additional outputs use up the whole estimated revenue")

    order = _rank(weights, owed, columns.accounts)
    weights_r, owed_r = weights[order], owed[order]
    sizes, sigops, dusts = (c[order] for c in output_costs(columns.scripts))
    expected = floor_mul_div(to_u64(weights_r), distributable, total_weight) + owed_r
    eligible = ((weights_r > 0) | (owed_r > 0)) & np.asarray(expected >= dusts, dtype=np.bool_)
    rows = np.flatnonzero(eligible)
    chosen = np.zeros(len(order), dtype=np.bool_)
    chosen[rows[_fill(sizes[rows], sigops[rows], budget.max_bytes - base_bytes,
                      budget.max_sigops - base_sigops)]] = True
    dropped = (weights_r > 0) & ~chosen

    # The pool weight pays for the dropped payees and funds the repayment boosts.
    pool_weight = fee_w + int(weights_r[dropped].sum())
    payee_weights: npt.NDArray[Any] = weights_r[chosen]
    payee_owed = owed_r[chosen]
    capacity = max(pool_weight - 1, 0)
    boosts: list[tuple[int, int]] = []
    for k in np.flatnonzero(payee_owed).tolist():
        want = -(-int(payee_owed[k]) * total_weight // distributable)
        boost = min(want, capacity)
        capacity -= boost
        boosts.append((k, boost))
    pool_weight -= sum(b for _, b in boosts)
    if boosts and max(int(payee_weights[k]) + b for k, b in boosts) >= 1 << 63:
        payee_weights = payee_weights.astype(object)  # the U64 check reports it
    for k, boost in boosts:
        payee_weights[k] += boost
    # A payee whose whole weight is a boost still needs weight > 0: guaranteed, since chosen
    # candidates have weight > 0 or owed > 0 (then boost > 0 unless capacity ran out).
    kept = payee_weights > 0
    payees = PayeeColumns(columns.scripts, payee_weights[kept], dusts[chosen][kept],
                          columns.accounts, order[chosen][kept])
    dist = Distribution.from_columns(
        distribution_id,
        PoolPayout(pool_script, max(pool_weight, 1)),
        payees,
        tuple(additional_outputs),
    )
    fitted = FittedDistribution(dist, (), (), (), fee_w)
    earned, owed_kept = weights_r[chosen][kept], payee_owed[kept]
    store_field(fitted, "earned", IntColumn(earned))
    store_field(fitted, "owed", IntColumn(owed_kept))
    store_field(fitted, "dropped", DroppedColumns(columns, weights, owed, order[dropped]))
    return fitted

