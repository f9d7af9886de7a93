"""The append-only, columnar, in-memory share log (reference/payouts.md §6.1).

Hot columns only: a dense miner code (int32, dictionary-encoded miner id), target difficulty,
template revenue, time and the store's share id (int64): 36 bytes a share, so a 1,000,000-share
window takes ~36 MB. Idempotency keys, worker names and job ids are persisted by the durable
store and never enter this log: as Python strings they would cost more than all hot columns
together.

Rows live in fixed-size chunks (default 2^20 rows) instead of one array that is reallocated: no
copy on growth, no transient 2× peak, at most one partly filled chunk of slack. Row numbers are
stable forever; :meth:`ShareLog.drop_before` frees the chunks wholly before a row the windows no
longer need (memory is bounded by the window, not by history), and :attr:`ShareLog.first_row`
is the oldest row still held. Windows read ranges through :meth:`ShareLog.pieces` and
:meth:`ShareLog.difficulty`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from payouts.accounting.weighting import MAX_LOG_ROWS
from payouts.errors import ValidationError

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

_MAX_MINERS = np.iinfo(np.int32).max  # codes are int32


class MinerIndex:
    """Dictionary encoding of miner ids: id <-> dense code 0, 1, 2, … in order of first sight.

    Keeps the known ids sorted (with their codes) so that encoding a batch is two
    ``searchsorted`` calls and reading weights in miner-id order is one fancy index.
    """

    __slots__ = ("_ids_by_code", "_n", "_sorted_codes", "_sorted_ids")

    def __init__(self) -> None:
        self._ids_by_code: I64 = np.empty(1024, dtype=np.int64)
        self._n = 0
        self._sorted_ids: I64 = np.empty(0, dtype=np.int64)
        self._sorted_codes: I32 = np.empty(0, dtype=np.int32)

    def __len__(self) -> int:
        return self._n

    @property
    def sorted_ids(self) -> I64:
        """Known miner ids, ascending (read-only view)."""
        v = self._sorted_ids.view()
        v.flags.writeable = False
        return v

    @property
    def sorted_codes(self) -> I32:
        """Codes of :attr:`sorted_ids`, position by position (read-only view)."""
        v = self._sorted_codes.view()
        v.flags.writeable = False
        return v

    def ids(self, codes: I32) -> I64:
        """Miner ids of ``codes``."""
        return self._ids_by_code[codes]

    def code(self, miner_id: int) -> int | None:
        """The code of ``miner_id``, or None if the log has never seen it."""
        pos = int(np.searchsorted(self._sorted_ids, miner_id))
        if pos < len(self._sorted_ids) and int(self._sorted_ids[pos]) == miner_id:
            return int(self._sorted_codes[pos])
        return None

    def encode(self, miner_ids: I64) -> I32:
        """Codes of ``miner_ids``, assigning new codes to ids not seen before."""
        if len(miner_ids) == 0:
            return np.empty(0, dtype=np.int32)
        # searchsorted with sorted needles is several times faster than with random ones
        # (cache-friendly), and the sort is cheap next to it
        order = np.argsort(miner_ids)  # ties get one code anyway: no need for stable
        needles = miner_ids[order]
        pos = np.searchsorted(self._sorted_ids, needles)
        if self._n:
            found = self._sorted_ids[np.minimum(pos, self._n - 1)] == needles
        else:
            found = np.zeros(len(needles), dtype=np.bool_)
        if found.all():
            out = np.empty(len(needles), dtype=np.int32)
            out[order] = self._sorted_codes[pos]
            return out
        # The ids not seen before, each once: a subsequence of the sorted needles is sorted,
        # so one pass over neighbours does what np.unique would sort again for (a restore
        # encodes the whole window at once).
        new = needles[~found]
        new = new[np.concatenate(([True], new[1:] != new[:-1]))]
        if self._n + len(new) > _MAX_MINERS:
            raise ValidationError("more than 2^31 - 1 distinct miners")
        codes = np.arange(self._n, self._n + len(new), dtype=np.int32)
        if self._n + len(new) > len(self._ids_by_code):
            grown = np.empty(max(2 * len(self._ids_by_code), self._n + len(new)), np.int64)
            grown[: self._n] = self._ids_by_code[: self._n]
            self._ids_by_code = grown
        self._ids_by_code[self._n : self._n + len(new)] = new
        at = np.searchsorted(self._sorted_ids, new)
        self._sorted_ids = np.insert(self._sorted_ids, at, new)
        self._sorted_codes = np.insert(self._sorted_codes, at, codes)
        self._n += len(new)
        out = np.empty(len(needles), dtype=np.int32)
        out[order] = self._sorted_codes[np.searchsorted(self._sorted_ids, needles)]
        return out


class LogPiece(NamedTuple):
    """Views of the hot columns for rows ``start .. start + len(codes)`` of the log."""

    start: int
    codes: I32
    difficulty: I64
    revenue: I64
    time_ms: I64
    share_id: I64


class _Chunk:
    __slots__ = ("codes", "difficulty", "revenue", "share_id", "time_ms")

    def __init__(self, rows: int) -> None:
        self.codes: I32 = np.empty(rows, dtype=np.int32)
        self.difficulty: I64 = np.empty(rows, dtype=np.int64)
        self.revenue: I64 = np.empty(rows, dtype=np.int64)
        self.time_ms: I64 = np.empty(rows, dtype=np.int64)
        self.share_id: I64 = np.empty(rows, dtype=np.int64)


ROW_BYTES = 4 + 8 + 8 + 8 + 8


class ShareLog:
    """Append-only columnar log of validated shares; row numbers are stable forever."""

    __slots__ = ("_base_chunk", "_chunk_rows", "_chunks", "_first", "_len", "miners")

    def __init__(self, *, chunk_rows: int = 1 << 20, first_row: int = 0) -> None:
        """``first_row``: the row number the first appended share gets (a log restored from a
        snapshot keeps the row numbers it had)."""
        if not 1 <= chunk_rows <= 1 << 30:
            # the upper bound keeps per-piece digit sums (< 2^27 each) inside int64
            raise ValueError("chunk_rows must be in [1, 2^30]")
        if first_row < 0:
            raise ValueError("first_row must be non-negative")
        self._chunk_rows = chunk_rows
        self._chunks: list[_Chunk | None] = [None] * (first_row // chunk_rows)
        self._base_chunk = first_row // chunk_rows  # chunks before it were dropped
        self._first = first_row
        self._len = first_row
        self.miners = MinerIndex()

    def __len__(self) -> int:
        return self._len

    @property
    def chunk_rows(self) -> int:
        return self._chunk_rows

    @property
    def first_row(self) -> int:
        """The oldest row still held (rows before it were dropped by :meth:`drop_before`)."""
        return self._first

    @property
    def nbytes(self) -> int:
        """Bytes held by the hot columns (allocated chunks, including slack)."""
        return (len(self._chunks) - self._base_chunk) * self._chunk_rows * ROW_BYTES

    def append(self, miner_id: I64, difficulty: I64, revenue: I64, time_ms: I64,
               share_id: I64 | None = None) -> range:
        """Append already validated rows (see :func:`.validate.validate_batch`); return their
        row numbers. ``share_id``: the store's ids of these shares (-1 where unknown)."""
        n = len(miner_id)
        if self._len + n > MAX_LOG_ROWS:
            raise ValidationError("share log full (2^36 rows)")
        codes = self.miners.encode(miner_id)
        first = self._len
        done = 0
        cr = self._chunk_rows
        while done < n:
            ci, off = divmod(self._len, cr)
            if ci == len(self._chunks):
                self._chunks.append(_Chunk(cr))
            ch = self._chunks[ci]
            assert ch is not None  # appending never reaches a dropped chunk
            take = min(cr - off, n - done)
            src = slice(done, done + take)
            dst = slice(off, off + take)
            ch.codes[dst] = codes[src]
            ch.difficulty[dst] = difficulty[src]
            ch.revenue[dst] = revenue[src]
            ch.time_ms[dst] = time_ms[src]
            ch.share_id[dst] = -1 if share_id is None else share_id[src]
            done += take
            self._len += take
        return range(first, self._len)

    def drop_before(self, row: int) -> int:
        """Forget every row before ``row``; return the new :attr:`first_row`. The chunks wholly
        before it are freed; the rest of its chunk stays allocated but is out of reach like
        the freed ones (reading it raises :class:`IndexError`), so what a window can read does
        not depend on chunk boundaries. Row numbers do not change. Never undone."""
        row = min(max(row, self._first), self._len)
        self._first = row
        keep_from = row // self._chunk_rows
        for ci in range(self._base_chunk, keep_from):
            self._chunks[ci] = None
        self._base_chunk = max(self._base_chunk, keep_from)
        return self.first_row

    def _check(self, a: int, b: int) -> None:
        if not self.first_row <= a <= b <= self._len:
            raise IndexError(
                f"row range [{a}, {b}) outside the log [{self.first_row}, {self._len})")

    def pieces(self, a: int, b: int) -> Iterator[LogPiece]:
        """Views of rows ``[a, b)``, one per chunk touched, in row order (no copies)."""
        self._check(a, b)
        cr = self._chunk_rows
        while a < b:
            ci, off = divmod(a, cr)
            take = min(cr - off, b - a)
            ch = self._chunks[ci]
            assert ch is not None  # _check refused rows before first_row
            s = slice(off, off + take)
            yield LogPiece(a, ch.codes[s], ch.difficulty[s], ch.revenue[s], ch.time_ms[s],
                           ch.share_id[s])
            a += take

    def difficulty(self, a: int, b: int) -> I64:
        """Target difficulties of rows ``[a, b)``: a view inside one chunk, else a copy."""
        parts = [p.difficulty for p in self.pieces(a, b)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(parts)

    def rows(self, a: int, b: int) -> tuple[I64, I64, I64, I64, I64]:
        """Copies of rows ``[a, b)``: ``(miner_id, difficulty, revenue, time_ms, share_id)``
        (what a snapshot stores: miner ids, not this log's codes)."""
        pieces = list(self.pieces(a, b))

        def cat(xs: list[I64]) -> I64:
            return np.concatenate(xs) if xs else np.empty(0, dtype=np.int64)

        return (
            cat([self.miners.ids(p.codes) for p in pieces]),
            cat([p.difficulty for p in pieces]),
            cat([p.revenue for p in pieces]),
            cat([p.time_ms for p in pieces]),
            cat([p.share_id for p in pieces]),
        )
