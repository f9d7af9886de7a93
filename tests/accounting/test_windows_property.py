"""Exactness: incremental windows == naive from-scratch Python-int recomputation.

Random logs (difficulties up to 2^52, revenues up to MAX_MONEY, zero revenue), random network
difficulty changes in both directions, random blocks, tiny log chunks and scan steps so that
every chunk-boundary and doubling path is taken; all three schemes, value weighting on and off.
"""

from __future__ import annotations

import random
from unittest.mock import patch

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payouts.accounting import windows
from payouts.accounting.accountant import Accountant
from payouts.accounting.chain import InMemoryChain
from payouts.accounting.log import ShareLog
from payouts.accounting.validate import MAX_DIFFICULTY, MAX_REVENUE
from payouts.accounting.windows import PplnsWindow, PropWindow, TidesWindow
from payouts.settings import AccountingSettings
from tests.accounting.helpers import NaiveModel, batch

MINERS = [-(2**63), -5, 0, 3, 17, 2**40, 2**63 - 1]

difficulty = st.one_of(
    st.integers(1, 16),
    st.integers(1, 2**20),
    st.integers(1, MAX_DIFFICULTY),
    st.just(MAX_DIFFICULTY),
)
revenue = st.one_of(
    st.just(0), st.integers(0, 10**9), st.integers(0, MAX_REVENUE), st.just(MAX_REVENUE)
)
row = st.tuples(st.sampled_from(MINERS), difficulty, revenue)
net_difficulty = st.one_of(st.integers(1, 64), st.integers(1, 2**24), st.integers(1, 2**56))
op = st.one_of(
    st.tuples(st.just("shares"), st.lists(row, min_size=0, max_size=12)),
    st.tuples(st.just("difficulty"), net_difficulty),
    st.tuples(st.just("block"), st.none()),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(acc: Accountant, model: NaiveModel) -> None:
    ids, w = acc.weights()
    want_ids, want_w = model.weights()
    assert ids.tolist() == want_ids
    assert w == want_w
    assert all(type(x) is int for x in w)
    assert acc.total_weight == sum(want_w)
    assert acc.window.start == model.start()
    assert acc.share_count == len(model.rows) - model.start()


@SETTINGS
@given(
    scheme=st.sampled_from(["tides", "pplns", "prop"]),
    value_weighting=st.booleans(),
    k=st.integers(1, 10),
    n=st.integers(1, 25),
    d0=net_difficulty,
    chunk_rows=st.sampled_from([1, 3, 7, 1 << 20]),
    scan_first=st.sampled_from([1, 2, 5, 4096]),
    ops=st.lists(op, max_size=25),
)
def test_accountant_matches_naive(
    scheme: str,
    value_weighting: bool,
    k: int,
    n: int,
    d0: int,
    chunk_rows: int,
    scan_first: int,
    ops: list[tuple[str, object]],
) -> None:
    cfg = AccountingSettings(scheme=scheme, tides_k=k, pplns_n=n, value_weighting=value_weighting)
    chain = InMemoryChain(d0)
    acc = Accountant(cfg, chain=chain, log=ShareLog(chunk_rows=chunk_rows))
    model = NaiveModel(scheme, k, n, value_weighting, d0)
    height = 0
    with patch.object(windows, "_SCAN_FIRST", scan_first):
        for kind, arg in ops:
            if kind == "shares":
                rows = arg
                assert isinstance(rows, list)
                acc.ingest(batch(rows))
                model.rows.extend(rows)
            elif kind == "difficulty":
                assert isinstance(arg, int)
                chain.set_difficulty(arg)
                model.network_difficulty = arg
            else:
                height += 1
                chain.block_found(height)
                model.block_found()
            _check(acc, model)


@SETTINGS
@given(
    value_weighting=st.booleans(),
    k=st.integers(1, 6),
    n=st.integers(1, 20),
    chunk_rows=st.sampled_from([2, 5, 1 << 20]),
    ops=st.lists(op, max_size=20),
)
def test_three_windows_share_one_log(
    value_weighting: bool, k: int, n: int, chunk_rows: int, ops: list[tuple[str, object]]
) -> None:
    """Windows sync lazily from a shared log; each stays exact on its own."""
    log = ShareLog(chunk_rows=chunk_rows)
    d = 1000
    wins = {
        "tides": TidesWindow(log, d, k, value_weighting=value_weighting),
        "pplns": PplnsWindow(log, n, value_weighting=value_weighting),
        "prop": PropWindow(log, value_weighting=value_weighting),
    }
    models = {s: NaiveModel(s, k, n, value_weighting, d) for s in wins}
    for kind, arg in ops:
        if kind == "shares":
            assert isinstance(arg, list)
            b = batch(arg)
            log.append(b.miner_id, b.difficulty, b.revenue, b.time_ms)
            for m in models.values():
                m.rows.extend(arg)
        elif kind == "difficulty":
            assert isinstance(arg, int)
            for w in wins.values():
                w.on_network_difficulty(arg)
            for m in models.values():
                m.network_difficulty = arg
        else:
            for w in wins.values():
                w.on_block_found()
            for m in models.values():
                m.block_found()
        for scheme, w in wins.items():
            ids, ws = w.weights()
            assert (ids.tolist(), ws) == models[scheme].weights()
            assert w.total_weight == sum(ws)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    value_weighting=st.booleans(),
    k=st.integers(1, 8),
)
def test_tides_large_random_log(seed: int, value_weighting: bool, k: int) -> None:
    """Longer logs built with numpy (hundreds of rows per batch, real-sized scan steps)."""
    rng = np.random.default_rng(seed)
    py = random.Random(seed)
    cfg = AccountingSettings(scheme="tides", tides_k=k, value_weighting=value_weighting)
    acc = Accountant(cfg, network_difficulty=1, log=ShareLog(chunk_rows=1000))
    model = NaiveModel("tides", k, value_weighting=value_weighting, network_difficulty=1)
    for _ in range(6):
        m = int(rng.integers(1, 2000))
        rows = list(
            zip(
                rng.integers(0, 50, m).tolist(),
                rng.integers(1, 1 << int(rng.integers(1, 53)), m).tolist(),
                rng.integers(0, MAX_REVENUE, m).tolist(),
                strict=True,
            )
        )
        acc.ingest(batch(rows))
        model.rows.extend(rows)
        total = sum(r[1] for r in model.rows)
        new_d = max(1, py.randint(0, total // k + 1) + py.randint(-2, 2))
        acc.set_network_difficulty(new_d)
        model.network_difficulty = new_d
        _check(acc, model)
