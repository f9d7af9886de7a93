"""validate_batch: each rule raises its specific error; Accountant.ingest changes nothing then."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from payouts.accounting.accountant import Accountant
from payouts.accounting.shares import ShareBatch
from payouts.accounting.validate import MAX_DIFFICULTY, MAX_REVENUE, validate_batch
from payouts.errors import (
    DuplicateKeyError,
    InvalidDifficultyError,
    UnknownMinerError,
    ValidationError,
)
from tests.accounting.helpers import batch

GOOD = [(1, 1, 0), (2, MAX_DIFFICULTY, MAX_REVENUE), (1, 1000, 625_000_000)]


def test_good_batch_passes_with_every_known_miner_form() -> None:
    b = batch(GOOD)
    validate_batch(b)
    validate_batch(b, {1, 2})
    validate_batch(b, lambda m: m in (1, 2))
    validate_batch(b, np.array([2, 1, 9], dtype=np.int64))
    validate_batch(b, range(3))
    validate_batch(batch([]), set())


@pytest.mark.parametrize(
    ("rows", "error", "code"),
    [
        ([(1, 0, 5)], InvalidDifficultyError, "invalid-difficulty"),
        ([(1, -3, 5)], InvalidDifficultyError, "invalid-difficulty"),
        ([(1, MAX_DIFFICULTY + 1, 5)], InvalidDifficultyError, "invalid-difficulty"),
        ([(1, 5, -1)], ValidationError, "invalid-revenue"),
        ([(1, 5, MAX_REVENUE + 1)], ValidationError, "invalid-revenue"),
    ],
)
def test_bounds(rows: list[tuple[int, int, int]], error: type[Exception], code: str) -> None:
    with pytest.raises(error) as exc:
        validate_batch(batch(GOOD + rows))
    assert exc.value.code == code  # type: ignore[attr-defined]
    assert "row 3" in str(exc.value)


def test_duplicate_key_inside_batch() -> None:
    b = batch(GOOD)
    b = replace(b, key=["a", "b", "a"])
    with pytest.raises(DuplicateKeyError, match="'a'") as exc:
        validate_batch(b)
    assert exc.value.code == "duplicate-key"


@pytest.mark.parametrize("known", [{1}, (lambda m: m == 1), np.array([1], dtype=np.int64)])
def test_unknown_miner(known: object) -> None:
    with pytest.raises(UnknownMinerError, match="2") as exc:
        validate_batch(batch(GOOD), known)  # type: ignore[arg-type]
    assert exc.value.code == "unknown-miner"


def test_ragged_and_wrong_dtype_and_negative_time() -> None:
    b = batch(GOOD)
    with pytest.raises(ValidationError, match="worker"):
        validate_batch(replace(b, worker=["w"]))
    with pytest.raises(ValidationError, match="revenue"):
        validate_batch(replace(b, revenue=b.revenue[:2]))
    with pytest.raises(ValidationError, match="int64"):
        validate_batch(replace(b, difficulty=b.difficulty.astype(np.float64)))
    with pytest.raises(ValidationError, match="int64"):
        validate_batch(replace(b, miner_id=[1, 2, 1]))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="time_ms"):
        validate_batch(replace(b, time_ms=np.array([0, -1, 2], dtype=np.int64)))


def test_rejected_batch_changes_nothing() -> None:
    acc = Accountant(known_miner={1, 2})
    acc.ingest(batch(GOOD))
    before = acc.weights(), acc.total_weight, acc.share_count, len(acc.log)
    bad: list[ShareBatch] = [
        batch([(1, 5, 5), (1, 0, 5)]),
        batch([(1, 5, 5), (3, 5, 5)]),
        replace(batch([(1, 5, 5), (2, 5, 5)]), key=["x", "x"]),
    ]
    for b in bad:
        with pytest.raises(ValidationError):
            acc.ingest(b)
        after = acc.weights(), acc.total_weight, acc.share_count, len(acc.log)
        assert after[0].miner_ids.tolist() == before[0].miner_ids.tolist()
        assert after[0].weights == before[0].weights
        assert after[1:] == before[1:]
    assert len(acc.log.miners) == 2  # the unknown miner 3 was never encoded
