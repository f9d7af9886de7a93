"""The short, deterministic crash loop of ``make test`` (issue #13): ``payouts serve`` on a
bitcoind regtest node, killed with SIGKILL at every lifecycle stage (found, confirmed, mature,
signing, broadcast, fallback, reorg: one kill at a seeded random moment per stage, plus the two
crash points between a found block's commits), restarted each time; then, on chain and in the
store, every block paid exactly once, every ledger line written once per time its block was in
the chain, every acknowledged share stored once (regtest/crash_serve.py). The long random loop
is ``python -m benchmarks.crash_serve --kills N`` in ``make fuzz``."""

from __future__ import annotations

from pathlib import Path

import pytest

from regtest.crash_serve import STAGES, run_crash_rounds
from regtest.harness import RegtestNode

pytestmark = [pytest.mark.bitcoind, pytest.mark.slow]


def test_serve_killed_at_every_stage_pays_every_block_exactly_once(
        regtest: RegtestNode, tmp_path: Path) -> None:
    report = run_crash_rounds(regtest, tmp_path, kills=1, seed=13)
    assert all(report.kills[s] >= 1 for s in STAGES), report.lines()
    assert report.how["found"]["crash point found"] == 1
    assert report.how["found"]["crash point recorded"] == 1
    assert report.blocks == 2 and report.shares_acknowledged > 0
