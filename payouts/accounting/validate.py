"""The share-batch validator: the one set of rules for shares, used by the API's ingest (through
:meth:`payouts.service.PoolService.ingest_accounts`), the durable store
(:func:`payouts.store.shares.persist_shares`) and the in-memory accountant
(:meth:`payouts.accounting.accountant.Accountant.ingest`).

Implements the input rules of ARCHITECTURE.md invariant 5 ("bad input gets a clear error and
changes nothing") for share events: every check runs before anything is written, each failure
raises the most specific error of :mod:`payouts.errors` with a stable code, and a failure one
row causes is a :class:`~payouts.errors.ShareRowError` naming that ``row`` (0-based) and its
``key``. Rules, in the order they are checked (the first failure is the one reported):

1. shape: every column as long as ``key`` (``column-length-mismatch``);
2. keys: non-empty strings of at most :data:`~payouts.accounting.shares.KEY_MAX` characters,
   without NUL, unique inside the batch (``duplicate-key``; uniqueness across batches is the
   store's, which is what makes re-sending a batch idempotent);
3. miners named by account: every account registered (``unknown-miner``,
   :func:`resolve_accounts`);
4. ``worker`` and ``job_id``: strings of at most ``WORKER_MAX`` / ``JOB_ID_MAX`` characters
   without NUL (PostgreSQL text cannot hold NUL);
5. integer columns: 1-D numpy arrays of integers within int64 (money and difficulties are
   integers: a float column is refused, never rounded);
6. target difficulty in ``[1, 2**52]``, template revenue in ``[0, MAX_MONEY]`` sats (zero is
   allowed: a share on an empty template carries no value weight), ``time_ms >= 0``;
7. every ``miner_id`` known, when the caller says which ids are.

The bounds of rule 6 are what makes the exact limb arithmetic of
:mod:`payouts.accounting.weighting` safe (``MAX_MONEY = 21e14 < 2**51``), so they are checked
here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence, Sized
from typing import Any

import numpy as np

from payouts.accounting.shares import I64, JOB_ID_MAX, KEY_MAX, WORKER_MAX, ShareBatch
from payouts.errors import (
    ColumnLengthError,
    DuplicateShareKeyError,
    ShareDifficultyError,
    ShareRevenueError,
    ShareRowError,
    UnknownShareMinerError,
    ValidationError,
)
from payouts.tx.txout import MAX_MONEY

MAX_DIFFICULTY = 1 << 52
MAX_REVENUE = MAX_MONEY  # 21,000,000 BTC in sats (consensus MAX_MONEY)
_INT64_MAX = np.iinfo(np.int64).max

#: How a caller says which miner ids exist: a predicate, any container (set, dict, range), or a
#: numpy array of known ids (checked vectorised).
KnownMiners = Callable[[int], bool] | Container[int] | np.ndarray

_INT_COLUMNS = ("miner_id", "difficulty", "revenue", "time_ms")


def _at(i: int, keys: Sequence[Any]) -> str:
    key = keys[i]
    return f"row {i} (key {key!r})" if isinstance(key, str) else f"row {i}"


def _first(values: Sequence[Any], bad: Callable[[Any], bool]) -> int:
    """Index of the first value for which ``bad`` holds (only called once a check has failed)."""
    return next(i for i, v in enumerate(values) if bad(v))


def _join_str(values: Sequence[Any]) -> str | None:
    """All values joined, or ``None`` if one is not a ``str``: a single C-level pass, where an
    ``isinstance`` loop costs ~1 ms per 10,000 values and column."""
    try:
        return "".join(values)
    except TypeError:
        return None


def _check_strings(
    name: str, values: Sequence[Any], max_len: int, keys: Sequence[Any], *,
    non_empty: bool = False,
) -> set[str]:
    """Every value a string (non-empty if asked) of at most ``max_len`` characters without NUL;
    returns the distinct values. Each check is one C-level pass (join, set, max over the
    distinct lengths: workers and job ids repeat); the Python scan that names the row runs only
    on failure."""
    joined = _join_str(values)
    distinct: set[str] = set(values) if joined is not None else set()
    if joined is None or (non_empty and "" in distinct):
        i = _first(values, lambda v: not isinstance(v, str) or (non_empty and not v))
        what = "a non-empty string" if non_empty else "a string"
        raise ShareRowError(f"row {i}: {name} must be {what}, got {values[i]!r}",
                            row=i, key=keys[i])
    if distinct and max(map(len, distinct)) > max_len:
        i = _first(values, lambda v: len(v) > max_len)
        raise ShareRowError(f"row {i}: {name} is longer than {max_len} characters",
                            row=i, key=keys[i])
    if "\x00" in joined:
        i = _first(values, lambda v: "\x00" in v)
        raise ShareRowError(f"row {i}: {name} contains a NUL character", row=i, key=keys[i])
    return distinct


def _first_duplicate(keys: Sequence[str]) -> int:
    """Row of the first key that appeared before it."""
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            return i
        seen.add(key)
    raise AssertionError("no duplicate")  # pragma: no cover - called only when one exists


def check_keys(key: Sequence[str], columns: Mapping[str, Sized]) -> None:
    """Rules 1 and 2: every column of ``columns`` as long as ``key``, and the keys good and
    unique. The part of the rules that needs no typed column and no miner id."""
    n = len(key)
    for name, col in columns.items():
        if len(col) != n:
            raise ColumnLengthError(name, len(col), n)
    distinct = _check_strings("key", key, KEY_MAX, key, non_empty=True)
    if len(distinct) != n:
        i = _first_duplicate(key)
        raise DuplicateShareKeyError(f"row {i}: key {key[i]!r} appears twice in the batch",
                                     row=i, key=key[i])


def resolve_accounts(keys: Sequence[str], accounts: Sequence[str],
                     ids: Mapping[str, int]) -> I64:
    """Rule 3: the miner id of every row's account (``ids``: account -> id of the registered
    ones); :class:`~payouts.errors.UnknownShareMinerError` naming the first unknown one."""
    try:
        return np.fromiter((ids[a] for a in accounts), dtype=np.int64, count=len(accounts))
    except KeyError:
        i = _first(accounts, lambda a: a not in ids)
        raise UnknownShareMinerError(f"row {i}: account {accounts[i]!r} is not registered",
                                     row=i, key=keys[i]) from None


def _describe(col: object) -> str:
    if isinstance(col, np.ndarray):
        return f"a {col.ndim}-D array of {col.dtype}"
    return type(col).__name__


def _int64(name: str, col: object) -> I64:
    if not isinstance(col, np.ndarray) or col.ndim != 1 or col.dtype.kind not in "iu":
        raise ValidationError(
            f"column {name!r} must be a 1-D numpy array of integers (int64), got "
            f"{_describe(col)}")
    if col.dtype.kind == "u" and len(col) and int(col.max()) > _INT64_MAX:
        raise ValidationError(f"column {name!r} has a value above the int64 range")
    return col.astype(np.int64, copy=False)


def int64_column(name: str, values: Sequence[int] | np.ndarray) -> I64:
    """Rule 5 for a column of plain ints (an :class:`AccountShareBatch`'s): as int64."""
    if isinstance(values, np.ndarray):
        return _int64(name, values)
    if not values:
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.asarray(values)
    except (OverflowError, TypeError, ValueError):  # ints past uint64, ragged input
        raise ValidationError(f"column {name!r} must hold int64 integers") from None
    return _int64(name, arr)


def unknown_miner_error(miner_id: I64, keys: Sequence[str],
                        unknown: Sequence[int]) -> UnknownShareMinerError:
    """Rule 7's error for the (sorted) ``unknown`` ids: it names the first row holding one."""
    i = int(np.flatnonzero(np.isin(miner_id, np.asarray(unknown, dtype=np.int64)))[0])
    more = f" (and {len(unknown) - 1} more unknown ids)" if len(unknown) > 1 else ""
    return UnknownShareMinerError(
        f"{_at(i, keys)}: miner_id {int(miner_id[i])} is not a registered miner{more}",
        row=i, key=keys[i])


def _unknown_miners(ids: I64, known: KnownMiners) -> list[int]:
    unique = np.unique(ids)
    if isinstance(known, np.ndarray):
        return [int(m) for m in unique[~np.isin(unique, known)]]
    candidates: list[int] = unique.tolist()
    if isinstance(known, Container):
        return [m for m in candidates if m not in known]
    return [m for m in candidates if not known(m)]


def _first_out_of_range(col: I64, low: int, high: int) -> int | None:
    bad = np.flatnonzero((col < low) | (col > high))
    return int(bad[0]) if bad.size else None


def validate_batch(batch: ShareBatch, known_miner: KnownMiners | None = None) -> ShareBatch:
    """Check ``batch`` against every rule; return it with its integer columns as int64 arrays
    (``batch`` itself when they already are).

    ``known_miner`` is a predicate, a container or an array of registered miner ids; ``None``
    skips rule 7 (for callers that check miners themselves, like the store, inside its
    transaction). Raises the specific :class:`~payouts.errors.ValidationError`:
    ``column-length-mismatch``, ``invalid-input`` (types, strings, integers, time),
    ``invalid-difficulty``, ``invalid-revenue``, ``duplicate-key``, ``unknown-miner``.
    """
    keys = batch.key
    check_keys(keys, {name: getattr(batch, name) for name in
                      ("miner_id", "worker", "difficulty", "job_id", "revenue", "time_ms")})
    _check_strings("worker", batch.worker, WORKER_MAX, keys)
    _check_strings("job_id", batch.job_id, JOB_ID_MAX, keys)
    miner_id, difficulty, revenue, time_ms = (_int64(c, getattr(batch, c)) for c in _INT_COLUMNS)
    i = _first_out_of_range(difficulty, 1, MAX_DIFFICULTY)
    if i is not None:
        raise ShareDifficultyError(
            f"{_at(i, keys)}: target difficulty {int(difficulty[i])} is outside [1, 2**52]",
            row=i, key=keys[i])
    i = _first_out_of_range(revenue, 0, MAX_REVENUE)
    if i is not None:
        raise ShareRevenueError(
            f"{_at(i, keys)}: template revenue {int(revenue[i])} sat is outside "
            f"[0, {MAX_REVENUE}]", row=i, key=keys[i])
    i = _first_out_of_range(time_ms, 0, _INT64_MAX)
    if i is not None:
        raise ShareRowError(f"{_at(i, keys)}: negative time_ms", row=i, key=keys[i])
    if known_miner is not None and len(miner_id):
        unknown = _unknown_miners(miner_id, known_miner)
        if unknown:
            raise unknown_miner_error(miner_id, keys, unknown)
    same = all(a is getattr(batch, c) for a, c in
               zip((miner_id, difficulty, revenue, time_ms), _INT_COLUMNS, strict=True))
    if same:
        return batch
    return ShareBatch(keys, miner_id, batch.worker, difficulty, batch.job_id, revenue, time_ms)
