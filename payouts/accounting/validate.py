"""Validation of a share batch, shared by the durable store and the in-memory accountant.

Implements the input rules of ARCHITECTURE.md invariant 5 ("bad input gets a clear error and
changes nothing") for share events: every check runs before anything is written, and each
failure raises the most specific error of :mod:`payouts.errors` with a stable code.

Bounds (they are what makes the exact limb arithmetic of :mod:`payouts.accounting.weighting`
safe, so they are checked here and nowhere else):

* target difficulty: an integer in ``[1, 2**52]``;
* template revenue: an integer in ``[0, MAX_MONEY]`` sats (``MAX_MONEY = 21e14 < 2**51``);
  zero is allowed (a share on an empty template then carries no value weight);
* ``time_ms``: an integer >= 0;
* idempotency keys unique inside the batch (uniqueness across batches is the store's job);
* every ``miner_id`` known.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence

import numpy as np

from payouts.accounting.shares import ShareBatch
from payouts.errors import (
    DuplicateKeyError,
    InvalidDifficultyError,
    InvalidRevenueError,
    UnknownMinerError,
    ValidationError,
)

MAX_DIFFICULTY = 1 << 52
MAX_REVENUE = 2_100_000_000_000_000  # 21,000,000 BTC in sats (consensus MAX_MONEY)

#: How a caller says which miner ids exist: a predicate, any container (set, dict, range), or a
#: numpy array of known ids (checked vectorised).
KnownMiners = Callable[[int], bool] | Container[int] | np.ndarray

_NUMERIC_COLUMNS = ("miner_id", "difficulty", "revenue", "time_ms")


def _first_duplicate(keys: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return None


def _unknown_miners(ids: np.ndarray, known: KnownMiners) -> list[int]:
    unique = np.unique(ids)
    if isinstance(known, np.ndarray):
        return [int(m) for m in unique[~np.isin(unique, known)]]
    candidates: list[int] = unique.tolist()
    if isinstance(known, Container):
        return [m for m in candidates if m not in known]
    return [m for m in candidates if not known(m)]


def validate_batch(batch: ShareBatch, known_miner: KnownMiners | None = None) -> None:
    """Raise the specific :class:`~payouts.errors.ValidationError` if ``batch`` is not acceptable.

    ``known_miner`` is a predicate, a container or an array of registered miner ids; ``None``
    skips the check (for callers that have already resolved miners). Codes raised:
    ``invalid-input`` (shape, dtype, lengths, time), ``invalid-difficulty``, ``invalid-revenue``,
    ``duplicate-key``, ``unknown-miner``.
    """
    n = len(batch.key)
    for name in ("worker", "job_id"):
        if len(getattr(batch, name)) != n:
            raise ValidationError(
                f"column {name!r} has {len(getattr(batch, name))} rows, key has {n}"
            )
    for name in _NUMERIC_COLUMNS:
        col = getattr(batch, name)
        if not isinstance(col, np.ndarray) or col.dtype != np.int64 or col.ndim != 1:
            raise ValidationError(f"column {name!r} must be a 1-D numpy int64 array")
        if len(col) != n:
            raise ValidationError(f"column {name!r} has {len(col)} rows, key has {n}")
    if n == 0:
        return
    d = batch.difficulty
    bad = np.flatnonzero((d < 1) | (d > MAX_DIFFICULTY))
    if bad.size:
        i = int(bad[0])
        raise InvalidDifficultyError(
            f"row {i} (key {batch.key[i]!r}): target difficulty {int(d[i])} is outside [1, 2**52]"
        )
    r = batch.revenue
    bad = np.flatnonzero((r < 0) | (r > MAX_REVENUE))
    if bad.size:
        i = int(bad[0])
        raise InvalidRevenueError(
            f"row {i} (key {batch.key[i]!r}): template revenue {int(r[i])} sat is outside "
            f"[0, {MAX_REVENUE}]",
        )
    bad = np.flatnonzero(batch.time_ms < 0)
    if bad.size:
        i = int(bad[0])
        raise ValidationError(f"row {i} (key {batch.key[i]!r}): negative time_ms")
    # set() runs in C; the Python scan that names the duplicate runs only on failure
    if len(set(batch.key)) != n:
        dup = _first_duplicate(batch.key)
        raise DuplicateKeyError(f"key {dup!r} appears more than once in the batch")
    if known_miner is not None:
        unknown = _unknown_miners(batch.miner_id, known_miner)
        if unknown:
            shown = ", ".join(str(m) for m in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UnknownMinerError(f"unknown miner id(s): {shown}{more}")
