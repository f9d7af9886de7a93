"""Limb arithmetic: digits, exact sums, prefix search, accumulator carries and borrows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.accounting.validate import MAX_DIFFICULTY, MAX_REVENUE
from payouts.accounting.weighting import (
    LIMB_BITS,
    LimbAccumulator,
    digits_value,
    exact_sum,
    largest_prefix_le,
    share_digits,
)

diffs = st.lists(st.integers(1, MAX_DIFFICULTY), min_size=1, max_size=50)
revs = st.integers(0, MAX_REVENUE)


def _weights_from_digits(digits: np.ndarray) -> list[int]:
    return [digits_value([int(x) for x in col]) for col in digits.T]


def test_extreme_share_weight_is_exact() -> None:
    d = np.array([MAX_DIFFICULTY, 1, MAX_DIFFICULTY - 1], dtype=np.int64)
    r = np.array([MAX_REVENUE, MAX_REVENUE, 0], dtype=np.int64)
    digits = share_digits(d, r)
    assert digits.shape == (4, 3)
    assert int(digits.max()) < 1 << (LIMB_BITS + 1)
    assert _weights_from_digits(digits) == [2**52 * MAX_REVENUE, MAX_REVENUE, 0]
    assert 2**52 * MAX_REVENUE > 2**102  # far beyond int64: the reason for limbs
    assert _weights_from_digits(share_digits(d, None)) == d.tolist()


@given(st.lists(st.tuples(st.integers(1, MAX_DIFFICULTY), revs), min_size=1, max_size=40))
def test_share_digits_exact(rows: list[tuple[int, int]]) -> None:
    d = np.array([x[0] for x in rows], dtype=np.int64)
    r = np.array([x[1] for x in rows], dtype=np.int64)
    digits = share_digits(d, r)
    assert int(digits.min()) >= 0
    assert int(digits.max()) < 1 << (LIMB_BITS + 1)
    assert _weights_from_digits(digits) == [a * b for a, b in rows]


@given(diffs)
def test_exact_sum(values: list[int]) -> None:
    assert exact_sum(np.array(values, dtype=np.int64)) == sum(values)


def _naive_prefix(values: list[int], bound: int) -> int:
    s, i = 0, 0
    while i < len(values) and s + values[i] <= bound:
        s += values[i]
        i += 1
    return i


@given(diffs, st.integers(-5, 2**60))
def test_largest_prefix_le_fast_path(values: list[int], bound: int) -> None:
    arr = np.array(values, dtype=np.int64)
    if bound < 0:
        bound = 0
    assert largest_prefix_le(arr, bound) == _naive_prefix(values, bound)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0, 1.2))
def test_largest_prefix_le_overflow_path(seed: int, frac: float) -> None:
    """Sums beyond int64 (4000 × ~2^52 ≈ 2^64): the exact binary-search path."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(MAX_DIFFICULTY // 2, MAX_DIFFICULTY + 1, 4000)
    values = arr.tolist()
    total = sum(values)
    assert total > 2**63
    bound = int(total * frac)  # only chooses the test point; the function sees an int
    assert largest_prefix_le(arr, bound) == _naive_prefix(values, bound)
    assert largest_prefix_le(arr, total) == len(values)
    assert largest_prefix_le(arr, values[0] - 1) == 0


@given(
    st.lists(
        st.tuples(st.booleans(), st.lists(st.tuples(st.integers(0, 4), revs), max_size=20)),
        max_size=12,
    )
)
def test_accumulator_add_subtract_normalize(
    steps: list[tuple[bool, list[tuple[int, int]]]],
) -> None:
    """Any sequence of adds and (never-more-than-added) subtractions reads back exactly."""
    acc = LimbAccumulator(4)
    acc.ensure(5)
    truth = [0] * 5
    added: list[tuple[int, int]] = []
    for subtract, rows in steps:
        if subtract:
            rows = added[: len(rows)]
            added = added[len(rows) :]
        else:
            added.extend(rows)
        if not rows:
            continue
        codes = np.array([c for c, _ in rows], dtype=np.int32)
        d = np.full(len(rows), MAX_DIFFICULTY, dtype=np.int64)
        digits = share_digits(d, np.array([r for _, r in rows], dtype=np.int64))
        acc.add(codes, digits, subtract=subtract)
        for c, r in rows:
            truth[c] += -MAX_DIFFICULTY * r if subtract else MAX_DIFFICULTY * r
    mask, values = acc.read(np.arange(5, dtype=np.int32))
    assert [t for t in truth if t] == values
    assert mask.tolist() == [t != 0 for t in truth]


def test_accumulator_huge_top_limb_path() -> None:
    """Totals whose top limb exceeds 2^36 still read back exactly (generic combine)."""
    acc = LimbAccumulator(2)
    acc.ensure(2)
    d = np.full(1 << 12, MAX_DIFFICULTY, dtype=np.int64)
    codes = np.zeros(len(d), dtype=np.int32)
    for _ in range(20):
        acc.add(codes, share_digits(d, None))
    _, values = acc.read(np.array([1, 0], dtype=np.int32))
    assert values == [20 * (1 << 12) * MAX_DIFFICULTY]


def test_accumulator_huge_value_weights_path() -> None:
    """Value-weighted totals >= 2^114 (top limb >= 2^36) take the generic combine, exactly."""
    acc = LimbAccumulator(4)
    acc.ensure(3)
    n = 1 << 12
    d = np.full(n, MAX_DIFFICULTY, dtype=np.int64)
    r = np.full(n, MAX_REVENUE, dtype=np.int64)
    acc.add(np.full(n, 2, dtype=np.int32), share_digits(d, r))
    acc.add(np.zeros(1, dtype=np.int32), share_digits(d[:1], r[:1] // 7))
    mask, values = acc.read(np.array([0, 1, 2], dtype=np.int32))
    assert mask.tolist() == [True, False, True]
    assert values == [MAX_DIFFICULTY * (MAX_REVENUE // 7), n * MAX_DIFFICULTY * MAX_REVENUE]
    assert values[1] >= 1 << 114
