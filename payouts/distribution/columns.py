"""Columnar helpers for distributions of 100,000 payees (issue #2: fit + amounts in ≤ 100 ms).

Three pieces:

- :func:`floor_mul_div`: ``floor(w·num/den)`` for a whole column of weights, exactly. The
  products pass 2^64 (a 2^50 weight times a revenue of 2^51 sat), so NumPy computes them as a
  128-bit fixed-point product plus one exact remainder check, in integer arithmetic only;
  operands outside the proven bounds go through Python ints instead. Never floats: this is money.
- :func:`exact_sum` (the share log's, :mod:`payouts.accounting.weighting`): the sum of a uint64
  column as a Python int (no wrap-around).
- :class:`Deferred` and :func:`defer_fields` (:mod:`payouts.distribution.deferred`, re-exported
  here): a frozen slots dataclass field that holds its tuple as columns and builds the tuple of
  objects the first time someone reads it. Creating 100,000
  small frozen objects costs more than the whole computation, and most readers (amounts, the
  ledger, serialization) can work from the columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from payouts.accounting.weighting import exact_sum as exact_sum
from payouts.distribution.deferred import Deferred as Deferred
from payouts.distribution.deferred import LazyTuple as LazyTuple
from payouts.distribution.deferred import defer_fields as defer_fields
from payouts.distribution.deferred import raw_field as raw_field
from payouts.distribution.deferred import store_field as store_field

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_MASK32 = np.uint64(0xFFFF_FFFF)
_SHIFT32 = np.uint64(32)
_LIMIT = 1 << 63  # the NumPy path needs den and num below 2^63 (see floor_mul_div)


def floor_mul_div(weights: U64, num: int, den: int) -> npt.NDArray[Any]:
    """``floor(w·num/den)`` for every ``w`` of ``weights`` (uint64), exactly.

    With ``num = Q·den + R`` (0 ≤ R < den) the result is ``w·Q + floor(w·R/den)``. For the second
    term let ``F = floor(R·2^64/den)`` (< 2^64): ``x = w·F/2^64`` underestimates ``y = w·R/den``
    by less than ``w/2^64 < 1``, so ``floor(y)`` is ``floor(x)`` or ``floor(x) + 1``.
    ``floor(x)`` is the high word of a 64×64-bit product (four 32-bit partial products), and the
    remainder ``r = w·R − floor(x)·den`` lies in ``[0, 2·den)``: below 2^64 when den < 2^63, so
    its value modulo 2^64 (uint64 wrap-around) is exact and ``r ≥ den`` decides the +1.
    With w ≤ den (true of every weight of a distribution), ``w·Q`` and the result are at most
    ``num``: below 2^63, so int64 holds them. Returns int64, or Python ints (dtype object) when
    den or num is 2^63 or more or a weight exceeds den.
    """
    if den <= 0 or num < 0:
        raise ValueError("floor_mul_div needs den > 0 and num >= 0")
    q_whole, rem = divmod(num, den)
    if den >= _LIMIT or num >= _LIMIT or int(weights.max(initial=0)) > den:
        return np.array([w * num // den for w in weights.tolist()], dtype=object)
    frac = (rem << 64) // den
    f_hi, f_lo = np.uint64(frac >> 32), np.uint64(frac & 0xFFFF_FFFF)
    w_hi, w_lo = weights >> _SHIFT32, weights & _MASK32
    lo_lo, lo_hi, hi_lo = w_lo * f_lo, w_lo * f_hi, w_hi * f_lo
    mid = (lo_lo >> _SHIFT32) + (lo_hi & _MASK32) + (hi_lo & _MASK32)
    low = w_hi * f_hi + (lo_hi >> _SHIFT32) + (hi_lo >> _SHIFT32) + (mid >> _SHIFT32)
    # uint64 products wrap modulo 2^64 by design here: r is exact (see above)
    r = weights * np.uint64(rem) - low * np.uint64(den)
    low += (r >= np.uint64(den)).astype(np.uint64)
    if q_whole:
        low += weights * np.uint64(q_whole)
    signed: npt.NDArray[np.int64] = low.view(np.int64)
    return signed


def to_u64(values: Sequence[int] | npt.NDArray[Any]) -> U64:
    """A column of ints in [0, 2^64) as uint64 (the caller has checked the range)."""
    return np.asarray(values, dtype=np.uint64)
