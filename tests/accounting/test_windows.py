"""Window semantics on hand-checked examples, and the no-rescan (incrementality) guarantee."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from payouts.accounting.accountant import Accountant
from payouts.accounting.chain import BlockFound, ChainListener, InMemoryChain
from payouts.accounting.log import LogPiece, ShareLog
from payouts.accounting.windows import (
    MinerWeights,
    PplnsWindow,
    PropWindow,
    TidesWindow,
    make_window,
)
from payouts.errors import InvalidDifficultyError, ValidationError
from payouts.settings import AccountingSettings
from tests.accounting.helpers import batch

ALICE, BOB, CAROL = 11, 22, 33
# The worked example of docs/accounting.md: (miner, target difficulty, template revenue sats)
EXAMPLE = [
    (ALICE, 800, 800_000_000),
    (BOB, 600, 750_000_000),
    (CAROL, 400, 800_000_000),
    (ALICE, 700, 750_000_000),
    (BOB, 500, 800_000_000),
]


def _plain(w: MinerWeights) -> tuple[list[int], list[int]]:
    return w.miner_ids.tolist(), w.weights


def _tides(value_weighting: bool = True, d: int = 1000) -> Accountant:
    cfg = AccountingSettings(scheme="tides", tides_k=2, value_weighting=value_weighting)
    acc = Accountant(cfg, network_difficulty=d)
    acc.ingest(batch(EXAMPLE))
    return acc


def test_docs_worked_example_value_weighting() -> None:
    acc = _tides()
    assert acc.window.start == 1  # 500+700+400 = 1600 < 2000 <= 2200 = 500+700+400+600
    assert acc.tides is not None and acc.tides.difficulty_sum == 2200
    ids, w = acc.weights()
    assert ids.tolist() == [ALICE, BOB, CAROL]
    assert w == [525_000_000_000, 850_000_000_000, 320_000_000_000]
    assert acc.total_weight == 1_695_000_000_000
    assert acc.share_count == 4


def test_docs_worked_example_difficulty_only() -> None:
    acc = _tides(value_weighting=False)
    ids, w = acc.weights()
    assert ids.tolist() == [ALICE, BOB, CAROL]
    assert w == [700, 1100, 400]
    assert acc.total_weight == 2200


def test_docs_worked_example_difficulty_adjustments() -> None:
    acc = _tides()
    acc.set_network_difficulty(1200)  # k·D = 2400: the window grows back over share #0
    assert acc.window.start == 0
    assert acc.weights().weights == [
        800 * 800_000_000 + 700 * 750_000_000,
        850_000_000_000,
        320_000_000_000,
    ]
    acc.set_network_difficulty(500)  # k·D = 1000: 500 < 1000 <= 1200
    assert acc.window.start == 3
    assert _plain(acc.weights()) == ([ALICE, BOB], [525_000_000_000, 400_000_000_000])
    acc.set_network_difficulty(10**30)  # more than the whole log: the whole log
    assert acc.window.start == 0 and acc.share_count == 5


def test_value_weighting_only_changes_own_share_weight() -> None:
    """Same difficulty, 8.0 vs 7.5 BTC templates: 16:15, and a third miner's weight is the same
    whichever template the others mined on."""
    acc = Accountant(AccountingSettings(scheme="prop"))
    acc.ingest(batch([(1, 1000, 800_000_000), (2, 1000, 750_000_000), (3, 1000, 780_000_000)]))
    _, w = acc.weights()
    assert w[0] * 15 == w[1] * 16
    assert w[2] == 1000 * 780_000_000
    acc2 = Accountant(AccountingSettings(scheme="prop"))
    acc2.ingest(batch([(1, 1000, 750_000_000), (2, 1000, 750_000_000), (3, 1000, 780_000_000)]))
    assert acc2.weights().weights[2] == w[2]


def test_zero_revenue_shares_carry_no_weight() -> None:
    acc = Accountant(AccountingSettings(scheme="prop"))
    acc.ingest(batch([(1, 1000, 0), (2, 10, 5)]))
    assert _plain(acc.weights()) == ([2], [50])
    assert acc.share_count == 2
    off = Accountant(AccountingSettings(scheme="prop", value_weighting=False))
    off.ingest(batch([(1, 1000, 0), (2, 10, 5)]))
    assert _plain(off.weights()) == ([1, 2], [1000, 10])


def test_tides_cut_uses_difficulty_not_weight() -> None:
    acc = Accountant(AccountingSettings(scheme="tides", tides_k=1), network_difficulty=10)
    # the newest share alone has difficulty 10 = k·D even though its value weight is tiny
    acc.ingest(batch([(1, 10, 10**12), (2, 10, 1)]))
    assert _plain(acc.weights()) == ([2], [10])


def test_pplns_last_n_and_blocks_do_not_matter() -> None:
    acc = Accountant(AccountingSettings(scheme="pplns", pplns_n=3, value_weighting=False))
    acc.ingest(batch([(1, 1, 1), (2, 2, 1), (3, 4, 1)]))
    acc.ingest(batch([(1, 8, 1), (1, 16, 1)]))
    assert _plain(acc.weights()) == ([1, 3], [24, 4])
    acc.on_block_found()
    assert _plain(acc.weights()) == ([1, 3], [24, 4])
    acc.ingest(batch([(4, 32, 1)] * 5))
    assert _plain(acc.weights()) == ([4], [96])


def test_prop_round_resets_on_block() -> None:
    chain = InMemoryChain(5)
    acc = Accountant(AccountingSettings(scheme="prop", value_weighting=False), chain=chain)
    acc.ingest(batch([(1, 3, 1), (2, 4, 1)]))
    ev = chain.block_found(100, "00" * 32)
    assert ev == BlockFound(100, "00" * 32, 5)
    assert _plain(acc.weights()) == ([], []) and acc.total_weight == 0 and acc.share_count == 0
    acc.ingest(batch([(2, 7, 1)]))
    assert _plain(acc.weights()) == ([2], [7])
    assert acc.blocks_found == 1


def test_chain_events_reach_subscribers() -> None:
    chain = InMemoryChain(1000)
    acc = Accountant(AccountingSettings(scheme="tides", tides_k=2), chain=chain)
    assert isinstance(acc, ChainListener)
    assert acc.network_difficulty == 1000
    acc.ingest(batch(EXAMPLE))
    chain.set_difficulty(500)
    assert acc.window.start == 3
    chain.block_found(7, network_difficulty=1200)  # a new D carried by a block event
    assert acc.network_difficulty == 1200 and acc.window.start == 0
    chain.unsubscribe(acc)
    chain.set_difficulty(500)
    assert acc.window.start == 0
    with pytest.raises(InvalidDifficultyError):
        chain.set_difficulty(0)
    with pytest.raises(InvalidDifficultyError):
        acc.set_network_difficulty(True)


def test_bad_window_parameters() -> None:
    log = ShareLog()
    with pytest.raises(ValidationError):
        PplnsWindow(log, 0)
    with pytest.raises(ValidationError):
        TidesWindow(log, 1, 0)
    with pytest.raises(InvalidDifficultyError):
        TidesWindow(log, 0)
    with pytest.raises(ValidationError):
        make_window("fpps", log)  # type: ignore[arg-type]


class CountingLog(ShareLog):
    """Counts every row a window reads, to prove nothing rescans the window."""

    rows_read = 0

    def pieces(self, a: int, b: int) -> Iterator[LogPiece]:
        for p in super().pieces(a, b):
            self.rows_read += len(p.codes)
            yield p


def _big_log(n: int) -> CountingLog:
    log = CountingLog(chunk_rows=1 << 16)
    ids = np.arange(n, dtype=np.int64) % 1000
    log.append(ids, np.ones(n, np.int64), np.full(n, 7, np.int64), np.zeros(n, np.int64))
    return log


@pytest.mark.parametrize("scheme", ["tides", "pplns", "prop"])
def test_updates_touch_only_rows_entering_or_leaving(scheme: str) -> None:
    n, w = 300_000, 100_000  # window: 100,000 shares of difficulty 1
    log = _big_log(n)
    win = make_window(scheme, log, network_difficulty=w // 8, tides_k=8, pplns_n=w)  # type: ignore[arg-type]
    win.sync()
    log.rows_read = 0
    # 10 more shares: at most the 10 new + 10 leaving + one bounded scan step per side
    log.append(*(np.ones(10, np.int64),) * 4)
    before = win.weights()
    assert log.rows_read <= 2 * 4096 + 40
    log.rows_read = 0
    win.on_block_found()
    win.weights()
    assert log.rows_read == 0
    if isinstance(win, TidesWindow):
        win.on_network_difficulty(w // 8 + 100)  # 800 shares enter
        assert win.share_count == w + 800
        assert log.rows_read <= 2 * 4096 + 2 * 800
        log.rows_read = 0
        win.on_network_difficulty(w // 8 - 100)  # 1,600 leave
        assert win.share_count == w - 800
        assert log.rows_read <= 2 * 4096 + 2 * 1600
    elif isinstance(win, PropWindow):
        assert win.share_count == 0 and before.weights
    else:
        assert win.share_count == w


def test_fractional_difficulty_cuts_at_the_exact_k_d() -> None:
    """D is exact (a node's is DIFF1/target): the TIDES cut compares the whole-number sums with
    ceil(k·D), which is the same minimal suffix as comparing with k·D itself."""
    from fractions import Fraction

    cfg = AccountingSettings(scheme="tides", tides_k=2, value_weighting=False)
    acc = Accountant(cfg, network_difficulty=Fraction(1600, 2) + Fraction(1, 3))  # k·D = 1600⅔
    acc.ingest(batch(EXAMPLE))
    # suffix sums from the end: 500, 1200, 1600, 2200: 1600 < 1600⅔ <= 2200
    assert acc.window.start == 1 and acc.tides is not None and acc.tides.target == 1601
    acc.set_network_difficulty(Fraction(1600, 2))  # k·D = 1600 exactly: 3 shares suffice
    assert acc.window.start == 2
    assert acc.network_difficulty == Fraction(800) and acc.network_difficulty == 800
    regtest = Fraction(65535, 140737471578112)  # about 4.66e-10: k·D < 1, one share covers it
    acc.set_network_difficulty(regtest)
    assert acc.window.start == 4 and acc.share_count == 1 and acc.network_difficulty == regtest
    for bad in (0.5, Fraction(0), Fraction(-1, 2), "800"):
        with pytest.raises(InvalidDifficultyError):
            acc.set_network_difficulty(bad)  # type: ignore[arg-type]
    assert acc.network_difficulty == regtest  # a refused value changed nothing
