"""Payout windows over the share log: TIDES (k·D), PPLNS (last N), PROP (since the last block).

Implements reference/payouts.md §1.1 (TIDES), §4 (PPLNS, PROP) and §6.1. A window is the row
range ``[start, end)`` of a :class:`~payouts.accounting.log.ShareLog` plus exact per-miner weight
totals of the rows inside it. Every change is incremental: appending shares touches only the new
rows and the rows that leave; a difficulty change touches only the rows that enter or leave; a
block found touches nothing (TIDES, PPLNS) or clears per-miner totals in O(miners) (PROP). No
operation rescans the window.

Definitions (docs/accounting.md):

* TIDES: the minimal suffix of the log whose target-difficulty sum is >= k·D, the whole log when
  its total is smaller. D is exact (a rational: regtest's is about 4.66e-10), so the cut
  compares the integer sums with ``ceil(k·D)``. Target difficulties are >= 1, so suffix sums
  strictly increase and that suffix is unique. The cut always uses difficulty, never value weight.
* PPLNS: the last N shares by count.
* PROP: the shares appended since the last ``block_found`` (the current round).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from fractions import Fraction
from typing import ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from payouts.accounting.log import ShareLog
from payouts.accounting.weighting import (
    DIFFICULTY_LIMBS,
    VALUE_LIMBS,
    LimbAccumulator,
    digits_value,
    exact_sum,
    largest_prefix_le,
    share_digits,
)
from payouts.errors import InvalidDifficultyError, ValidationError
from payouts.states import Scheme

I64 = npt.NDArray[np.int64]


#: first sub-range examined when the TIDES cut moves; doubled each step (bounded work per move)
_SCAN_FIRST = 4096
#: rows whose weights are added at once (bounds the transient limb digits)
_APPLY_ROWS = 1 << 17


Difficulty = int | Fraction
"""A network difficulty, exactly: ``DIFF1_TARGET / target`` is rational
(:func:`payouts.tx.block.difficulty_from_bits`); an ``int`` is accepted where it is whole."""


def check_network_difficulty(d: Difficulty) -> Fraction:
    """Network difficulty as the engine keeps it: an exact positive rational. Floats are
    refused (inexact: the window would depend on rounding), as are bools, zero and negatives."""
    if isinstance(d, bool) or not isinstance(d, int | Fraction) or d <= 0:
        raise InvalidDifficultyError(
            f"network difficulty must be a positive int or Fraction, got {d!r}")
    return Fraction(d)


def ceil_int(x: Fraction) -> int:
    """``ceil(x)`` exactly."""
    return -(-x.numerator // x.denominator)


class MinerWeights(NamedTuple):
    """Per-miner weights of a window: ``miner_ids`` ascending, ``weights`` exact and > 0."""

    miner_ids: I64
    weights: list[int]


class Window(ABC):
    """Rows ``[start, end)`` of ``log`` with exact per-miner weight totals.

    The window catches up with the log lazily (:meth:`sync`), so it can never be stale: every
    reader syncs first. Several windows may share one log.
    """

    scheme: ClassVar[Scheme]

    def __init__(self, log: ShareLog, *, value_weighting: bool = True) -> None:
        self._log = log
        self.value_weighting = value_weighting
        self._acc = LimbAccumulator(VALUE_LIMBS if value_weighting else DIFFICULTY_LIMBS)
        # A log restored from a snapshot starts at a later row (payouts.accounting.snapshot).
        self._start = self._end = log.first_row
        self._total_weight = 0

    # ---- reading -------------------------------------------------------------------------
    @property
    def start(self) -> int:
        self.sync()
        return self._start

    @property
    def end(self) -> int:
        self.sync()
        return self._end

    @property
    def share_count(self) -> int:
        self.sync()
        return self._end - self._start

    @property
    def total_weight(self) -> int:
        """Σ weight over the window, exact (equals ``sum(self.weights().weights)``)."""
        self.sync()
        return self._total_weight

    def weights(self) -> MinerWeights:
        """Miners with a nonzero weight, sorted by miner id, and their exact weights.

        O(known miners), independent of the window length.
        """
        self.sync()
        miners = self._log.miners
        mask, values = self._acc.read(miners.sorted_codes)
        return MinerWeights(miners.sorted_ids[mask].copy(), values)

    # ---- events --------------------------------------------------------------------------
    def sync(self) -> None:
        """Take in the rows appended to the log since the last call."""
        n = len(self._log)
        if n > self._end:
            old_end, self._end = self._end, n
            self._appended(old_end, n)

    def on_block_found(self) -> None:  # noqa: B027 - deliberately a no-op by default
        """A block was found by the pool (only PROP cares)."""

    def on_network_difficulty(self, difficulty: Difficulty) -> None:  # noqa: B027
        """The network difficulty changed (only TIDES cares)."""

    # ---- internals -----------------------------------------------------------------------
    @abstractmethod
    def _appended(self, a: int, b: int) -> None:
        """Rows ``[a, b)`` were appended and ``_end`` already moved to ``b``."""

    def _apply(self, a: int, b: int, *, subtract: bool = False) -> None:
        """Add (or remove) the weights of rows ``[a, b)`` to (or from) the totals."""
        self._acc.ensure(len(self._log.miners))
        for piece in self._log.pieces(a, b):
            # At most _APPLY_ROWS rows at a time: the limb digits of a whole 2^20-row chunk
            # were ~50 MB of transient memory (a restart's first sync of a 1M-share window).
            for lo in range(0, len(piece.codes), _APPLY_ROWS):
                hi = lo + _APPLY_ROWS
                rev = piece.revenue[lo:hi] if self.value_weighting else None
                digits = share_digits(piece.difficulty[lo:hi], rev)
                self._acc.add(piece.codes[lo:hi], digits, subtract=subtract)
                delta = digits_value([int(s) for s in digits.sum(axis=1, dtype=np.int64)])
                self._total_weight += -delta if subtract else delta


class PplnsWindow(Window):
    """The last ``n`` shares by count (reference/payouts.md §4, PPLNS)."""

    scheme = "pplns"

    def __init__(self, log: ShareLog, n: int, *, value_weighting: bool = True) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValidationError(f"PPLNS window size must be an integer >= 1, got {n!r}")
        super().__init__(log, value_weighting=value_weighting)
        self.n = n

    def _appended(self, a: int, b: int) -> None:
        new_start = max(self._start, b - self.n)
        # Rows that would leave again at once are never added.
        self._apply(max(a, new_start), b)
        if new_start > self._start:
            self._apply(self._start, min(a, new_start), subtract=True)
            self._start = new_start


class PropWindow(Window):
    """Shares since the pool's last block (reference/payouts.md §4, PROP)."""

    scheme = "prop"

    def _appended(self, a: int, b: int) -> None:
        self._apply(a, b)

    def on_block_found(self) -> None:
        """Close the round: the shares logged so far belong to the block just found."""
        self.sync()
        self._acc.clear()  # O(miners), no row is read
        self._start = self._end
        self._total_weight = 0


class TidesWindow(Window):
    """Minimal suffix with target-difficulty sum >= k·D (reference/payouts.md §1.1)."""

    scheme = "tides"

    def __init__(
        self,
        log: ShareLog,
        network_difficulty: Difficulty,
        k: int = 8,
        *,
        value_weighting: bool = True,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValidationError(f"TIDES k must be an integer >= 1, got {k!r}")
        super().__init__(log, value_weighting=value_weighting)
        self.k = k
        self._network_difficulty = check_network_difficulty(network_difficulty)
        self._difficulty_sum = 0  # Σ target difficulty over [start, end), exact

    @property
    def network_difficulty(self) -> Fraction:
        return self._network_difficulty

    @property
    def target(self) -> int:
        """``ceil(k·D)``, in difficulty units: share difficulties are whole, so a suffix sum
        reaches k·D exactly when it reaches this integer (D itself may be a fraction)."""
        return ceil_int(self.k * self._network_difficulty)

    @property
    def difficulty_sum(self) -> int:
        """Σ target difficulty inside the window (>= :attr:`target` unless the log is short)."""
        self.sync()
        return self._difficulty_sum

    def on_network_difficulty(self, difficulty: Difficulty) -> None:
        """Move the window start forward (D fell) or backward (D rose), touching only the rows
        that leave or enter."""
        self._network_difficulty = check_network_difficulty(difficulty)
        self.sync()
        self._recut()

    def _appended(self, a: int, b: int) -> None:
        self._difficulty_sum += exact_sum(self._log.difficulty(a, b))
        self._apply(a, b)
        # in steady state about as many rows leave as entered: scan that many at once
        self._recut(scan=b - a)

    def _recut(self, scan: int = 0) -> None:
        target = self.target
        if self._difficulty_sum < target:
            self._extend_back(target - self._difficulty_sum)
        elif self._difficulty_sum > target:
            self._drop_front(self._difficulty_sum - target, max(_SCAN_FIRST, scan))

    def _drop_front(self, excess: int, size: int) -> None:
        """Drop the longest prefix of the window whose difficulty sum is <= ``excess``,
        examining ``size`` rows first and twice as many at each further step."""
        start, end = self._start, self._end
        while start < end:
            b = min(start + size, end)
            d = self._log.difficulty(start, b)
            i = largest_prefix_le(d, excess)
            if i == 0:
                break
            dropped = exact_sum(d[:i])
            excess -= dropped
            self._difficulty_sum -= dropped
            self._apply(start, start + i, subtract=True)
            start += i
            if start < b:
                break  # the next share would take the sum below k·D
            size *= 2
        self._start = start

    @property
    def short_of_history(self) -> bool:
        """The window wants rows older than the log still holds (k·D rose past the rows kept
        in memory): whoever dropped them (the service, on a snapshot) must reload them from the
        store for the window to be the TIDES window again."""
        self.sync()
        first = self._log.first_row
        return self._start == first and first > 0 and self._difficulty_sum < self.target

    def _extend_back(self, deficit: int) -> None:
        """Take in the shortest run of rows before the window that covers ``deficit`` (no
        further back than the oldest row the log still holds)."""
        start, size, first = self._start, _SCAN_FIRST, self._log.first_row
        while start > first and deficit > 0:
            a = max(first, start - size)
            d = self._log.difficulty(a, start)
            total = exact_sum(d)
            # keep all of d, or its shortest suffix with sum >= deficit, i.e. skip the longest
            # prefix with sum <= total - deficit
            skip = 0 if total <= deficit else largest_prefix_le(d, total - deficit)
            new_start = a + skip
            added = exact_sum(d[new_start - a :])
            self._apply(new_start, start)
            self._difficulty_sum += added
            deficit -= added
            start = new_start
            size *= 2
        self._start = start


def make_window(
    scheme: Scheme,
    log: ShareLog,
    *,
    network_difficulty: Difficulty = 1,
    tides_k: int = 8,
    pplns_n: int = 1_000_000,
    value_weighting: bool = True,
) -> Window:
    """The configured window (see :class:`payouts.settings.AccountingSettings`)."""
    if scheme == "tides":
        return TidesWindow(log, network_difficulty, tides_k, value_weighting=value_weighting)
    if scheme == "pplns":
        return PplnsWindow(log, pplns_n, value_weighting=value_weighting)
    if scheme == "prop":
        return PropWindow(log, value_weighting=value_weighting)
    raise ValidationError(f"unknown accounting scheme {scheme!r}")
