"""ShareLog and MinerIndex: chunked storage, stable rows, dictionary encoding, memory bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from payouts.accounting.log import MinerIndex, ShareLog


@given(st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30), max_size=8))
def test_miner_index_roundtrip(batches: list[list[int]]) -> None:
    idx = MinerIndex()
    first_code: dict[int, int] = {}
    for ids in batches:
        arr = np.array(ids, dtype=np.int64)
        codes = idx.encode(arr)
        assert codes.dtype == np.int32
        for m, c in zip(ids, codes.tolist(), strict=True):
            assert first_code.setdefault(m, c) == c  # a code never changes
        assert idx.ids(codes).tolist() == ids
    assert len(idx) == len(first_code)
    assert idx.sorted_ids.tolist() == sorted(first_code)
    assert idx.ids(idx.sorted_codes).tolist() == sorted(first_code)
    assert sorted(first_code.values()) == list(range(len(first_code)))


@given(
    st.sampled_from([1, 2, 5, 64]),
    st.lists(st.integers(0, 17), max_size=10),
    st.data(),
)
def test_pieces_cover_ranges(chunk_rows: int, sizes: list[int], data: st.DataObject) -> None:
    log = ShareLog(chunk_rows=chunk_rows)
    total = 0
    for n in sizes:
        d = np.arange(total + 1, total + n + 1, dtype=np.int64)
        rows = log.append(d * 7, d, d * 3, d * 5)
        assert rows == range(total, total + n)
        total += n
    assert len(log) == total
    a = data.draw(st.integers(0, total))
    b = data.draw(st.integers(a, total))
    pieces = list(log.pieces(a, b))
    assert all(len(p.codes) <= chunk_rows for p in pieces)
    got = np.concatenate([p.difficulty for p in pieces]) if pieces else np.empty(0, np.int64)
    assert got.tolist() == list(range(a + 1, b + 1))
    assert log.difficulty(a, b).tolist() == list(range(a + 1, b + 1))
    for p in pieces:
        assert p.revenue.tolist() == (p.difficulty * 3).tolist()
        assert p.time_ms.tolist() == (p.difficulty * 5).tolist()
        assert log.miners.ids(p.codes).tolist() == (p.difficulty * 7).tolist()
        assert p.difficulty[0] == p.start + 1
    with pytest.raises(IndexError):
        list(log.pieces(0, total + 1))


def test_memory_is_bounded_by_what_is_kept_not_by_history() -> None:
    """36 hot bytes a share (code, difficulty, revenue, time, share id) plus at most one chunk
    of slack; drop_before frees whole chunks, so memory follows the rows the windows still need
    (a 1M-share window: ~40 MiB), not every share ever logged. The real peak is measured in
    benchmarks/bench_accounting.py."""
    log = ShareLog(chunk_rows=1000)
    per_row = sum(a.itemsize for a in (np.int32(0), *(np.int64(0),) * 4))
    assert per_row == 36
    assert -(-1_000_000 // (1 << 20)) * (1 << 20) * per_row < 40 * 2**20
    ones = np.ones(2500, dtype=np.int64)
    log.append(ones, ones, ones, ones, np.arange(1, 2501, dtype=np.int64))
    assert log.nbytes == 3 * 1000 * 36 and log.first_row == 0
    assert log.drop_before(2100) == 2100  # whole chunks freed; row 2100 on stays readable
    assert log.nbytes == 1000 * 36 and len(log) == 2500
    assert log.rows(2100, 2103)[4].tolist() == [2101, 2102, 2103]  # row numbers unchanged
    with pytest.raises(IndexError):  # in an allocated chunk, but forgotten all the same
        list(log.pieces(2099, 2101))
    assert log.drop_before(10) == 2100  # never undone


def test_chunk_rows_bounds() -> None:
    with pytest.raises(ValueError):
        ShareLog(chunk_rows=0)
    with pytest.raises(ValueError):
        ShareLog(chunk_rows=(1 << 30) + 1)
