"""Exact share weights in numpy: base-2^26 limbs, per-miner limb accumulators, exact range sums.

Implements value weighting (docs/accounting.md, reference/payouts.md §1.1 and §6.1):

* on:  ``weight = target_difficulty × template_revenue_sats``
* off: ``weight = target_difficulty``

With difficulty <= 2^52 and revenue < 2^51 (checked by :mod:`.validate`) a share weight is
< 2^103 and a window sum is larger still, so int64 cannot hold it. Each share weight is split into
base-2^26 digits ("limbs") computed exactly in int64 from 26-bit halves of its factors; per-miner
totals are kept as one int64 array per limb. Every digit is < 2^27, so an accumulator absorbs
2^33 additions or subtractions before it could overflow; :meth:`LimbAccumulator.normalize`
propagates carries (and borrows, via the arithmetic shift) long before that. Python ints are only
built at read time, for miners with a nonzero weight. No float is involved anywhere.
"""

from __future__ import annotations

import operator
from itertools import repeat

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

LIMB_BITS = 26
LIMB_MASK = (1 << LIMB_BITS) - 1
#: limbs per weight: 4 × 26 = 104 bits hold d·r < 2^103; 2 × 26 bits hold d <= 2^52 (top limb
#: also absorbs the window-level carries, see LimbAccumulator).
VALUE_LIMBS = 4
DIFFICULTY_LIMBS = 2
#: rows added or removed since the last normalisation that force a normalisation: each changes a
#: limb by < 2^27, so limbs stay below 2^26 + 2^33·2^27 < 2^61 (top limb: see MAX_LOG_ROWS).
PENDING_LIMIT = 1 << 33
#: log rows above which the top-limb headroom argument no longer holds (2^36 rows would need
#: ~2 TB of memory, so this is a formality that is nevertheless enforced by the log).
MAX_LOG_ROWS = 1 << 36


def share_digits(difficulty: I64, revenue: I64 | None) -> I64:
    """Base-2^26 digits of each share weight, shape ``(limbs, n)``, every digit in [0, 2^27).

    ``revenue=None`` means value weighting off (weight = difficulty, 2 limbs); otherwise the
    weight is ``difficulty × revenue`` (4 limbs), each partial product < 2^53 so int64 is exact.
    """
    d0 = difficulty & LIMB_MASK
    d1 = difficulty >> LIMB_BITS  # <= 2^26 (difficulty <= 2^52)
    if revenue is None:
        return np.stack((d0, d1))
    r0 = revenue & LIMB_MASK
    r1 = revenue >> LIMB_BITS  # < 2^25 (revenue < 2^51)
    out = np.empty((VALUE_LIMBS, len(difficulty)), dtype=np.int64)
    p = d0 * r0  # < 2^52
    out[0] = p & LIMB_MASK
    p >>= LIMB_BITS  # carry < 2^26
    p += d1 * r0  # < 2^26 + 2^52
    p += d0 * r1  # < 2^26 + 2^52 + 2^51
    out[1] = p & LIMB_MASK
    p >>= LIMB_BITS  # < 2^28
    p += d1 * r1  # < 2^28 + 2^51
    out[2] = p & LIMB_MASK
    out[3] = p >> LIMB_BITS  # < 2^26
    return out


def digits_value(digit_sums: list[int]) -> int:
    """Python int from per-limb sums (any magnitude, any sign)."""
    return sum(s << (LIMB_BITS * j) for j, s in enumerate(digit_sums))


_HALF = np.uint64(32)
_LOW_HALF = np.uint64(0xFFFF_FFFF)
_SUM_ROWS = 1 << 31  # rows per partial sum: 2^31 halves below 2^32 each sum below 2^63


def exact_sum(values: npt.NDArray[np.int64] | npt.NDArray[np.uint64]) -> int:
    """Σ of a column of non-negative integers (int64 or uint64) as a Python int, exact for any
    magnitude and length: the 32-bit halves are summed apart in uint64, 2^31 rows at a time,
    and joined as Python ints. No wrap-around, no float. (Difficulty ranges of the share log,
    the per-miner difficulty of a window, a distribution's weights.)"""
    u = values.view(np.uint64) if values.dtype == np.int64 else values
    total = 0
    for start in range(0, len(u), _SUM_ROWS):
        part = u[start : start + _SUM_ROWS]
        hi = int((part >> _HALF).sum(dtype=np.uint64))
        lo = int((part & _LOW_HALF).sum(dtype=np.uint64))
        total += (hi << 32) + lo
    return total


def largest_prefix_le(values: I64, bound: int) -> int:
    """Largest ``i`` in ``[0, len(values)]`` with ``sum(values[:i]) <= bound``.

    ``values`` are in [1, 2^52], so prefix sums strictly increase and the answer is unique.
    Fast path: when the total fits int64, one cumsum and ``searchsorted``; otherwise a binary
    search evaluating exact prefixes from cumsums of the 26-bit halves.
    """
    n = len(values)
    if n == 0 or bound < int(values[0]):
        return 0
    chi = np.cumsum(values >> LIMB_BITS, dtype=np.int64)
    clo = np.cumsum(values & LIMB_MASK, dtype=np.int64)
    if int(chi[-1]) < (1 << 36):  # (chi << 26) + clo < 2^62 + 2^62
        full = (chi << LIMB_BITS) + clo
        if bound >= int(full[-1]):
            return n
        return int(np.searchsorted(full, bound, side="right"))
    lo, hi = 1, n  # invariant: prefix(lo) <= bound; answer in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if (int(chi[mid - 1]) << LIMB_BITS) + int(clo[mid - 1]) <= bound:
            lo = mid
        else:
            hi = mid - 1
    return lo


class LimbAccumulator:
    """Per-slot exact integers as ``limbs`` int64 arrays of base-2^26 digits.

    Slot = dense miner code of :class:`payouts.accounting.log.MinerIndex`. Low limbs are kept in
    [0, 2^26) by :meth:`normalize`; the top limb holds the rest of the value and is never
    negative once normalised because every total it represents is >= 0.
    """

    __slots__ = ("_acc", "_pending", "limbs")

    def __init__(self, limbs: int) -> None:
        self.limbs = limbs
        self._acc: I64 = np.zeros((limbs, 0), dtype=np.int64)
        self._pending = 0

    @property
    def slots(self) -> int:
        return int(self._acc.shape[1])

    def ensure(self, slots: int) -> None:
        """Grow to at least ``slots`` slots (amortised: capacity at least doubles)."""
        if slots <= self.slots:
            return
        grown = np.zeros((self.limbs, max(slots, 2 * self.slots, 1024)), dtype=np.int64)
        grown[:, : self.slots] = self._acc
        self._acc = grown

    def add(self, codes: I32, digits: I64, *, subtract: bool = False) -> None:
        """Add (or subtract) ``digits[:, i]`` to slot ``codes[i]`` for every row ``i``."""
        if self._pending + len(codes) > PENDING_LIMIT:
            self.normalize()
        op = np.subtract if subtract else np.add
        for j in range(self.limbs):
            op.at(self._acc[j], codes, digits[j])
        self._pending += len(codes)

    def normalize(self) -> None:
        """Propagate carries so that limbs 0..L-2 are in [0, 2^26) (values unchanged)."""
        acc = self._acc
        for j in range(self.limbs - 1):
            carry = acc[j] >> LIMB_BITS  # floor division: a borrow for negative limbs
            acc[j] &= LIMB_MASK
            acc[j + 1] += carry
        self._pending = 0

    def clear(self) -> None:
        self._acc[:] = 0
        self._pending = 0

    def read(self, codes: I32) -> tuple[npt.NDArray[np.bool_], list[int]]:
        """Exact values of ``codes`` (in the given order): a mask of nonzero slots and the
        Python ints of those slots, in order. Normalises first."""
        self.normalize()
        limbs = self._acc[:, codes]
        mask = np.any(limbs != 0, axis=0)
        limbs = limbs[:, mask]
        top = limbs[-1]
        if len(top) == 0:
            return mask, []
        if int(top.max()) >= (1 << 36):
            # Astronomically large totals: combine limb by limb in Python ints.
            cols = [limbs[j].tolist() for j in range(self.limbs)]
            return mask, [digits_value(list(ds)) for ds in zip(*cols, strict=True)]
        # Pairs of limbs fit int64 exactly: low limb < 2^26, the one above < 2^36 here.
        lo = limbs[0] | (limbs[1] << LIMB_BITS)
        if self.limbs == DIFFICULTY_LIMBS:
            return mask, lo.tolist()
        hi = limbs[2] | (limbs[3] << LIMB_BITS)
        if not hi.any():
            return mask, lo.tolist()
        # map() over C-level operators, multiply-add: ~25% faster than a comprehension of
        # shifts for 100k miners (the weights read is on the distribution's 100 ms budget)
        scaled = map(operator.mul, hi.tolist(), repeat(1 << (2 * LIMB_BITS)))
        return mask, list(map(operator.add, scaled, lo.tolist()))
