"""The ledger backlog (issue #11): a block's many "dropped" credits are stored with the block as
one compact row and written out in small transactions afterwards. Balances count them at once,
the lines written out equal the block's settlement entries exactly, a reorg cancels what is not
written yet and a returning block resumes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from payouts import service as service_module
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.lifecycle_store import revive_block
from payouts.store.ledger import (
    drain_backlog,
    export_ledger,
    ledger_balances,
    materialize_backlog,
    miner_balance,
    orphan_block,
)
from tests.store.conftest import count, make_batch

POOL = "0014" + "aa" * 20


def p2tr(i: int) -> bytes:
    return bytes.fromhex("5120") + i.to_bytes(32, "big")


@pytest.fixture
def svc(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PoolService:
    monkeypatch.setattr(service_module, "LEDGER_INLINE_MAX", 3)
    s = Settings(data_dir=tmp_path, accounting={"scheme": "pplns", "pplns_n": 1000},
                 pool={"payout_script": POOL, "fee_bps": 100},
                 distribution={"max_outputs_bytes": 31 + 43 * 2})  # 2 payees fit, 18 dropped
    svc = PoolService(s, engine=engine)
    ids = [svc.register_miner(f"m{i}", p2tr(i)).id for i in range(20)]
    svc.ingest(make_batch([f"k{i}" for i in range(200)], miner_id=[ids[i % 20] for i in range(200)],
                          difficulty=[1000 + 10 * (i % 20) for i in range(200)]))
    return svc


def test_a_large_block_credits_through_the_backlog(svc: PoolService, engine: Engine) -> None:
    fitted = svc.publish_distribution(312_500_000)
    assert len(fitted.dropped) == 18
    rec = svc.record_block(distribution_id=1, revenue=312_500_000, block_hash=b"\x01" * 32,
                           height=101)
    entries = {(e.account, e.amount, e.reason) for e in rec.settlement.entries}
    assert sum(1 for e in entries if e[2] == "dropped") == 18
    # Written with the block: the lines that are not "dropped"; the 18 wait in the backlog.
    assert count(engine, "ledger_backlog") == 1
    assert all(e["reason"] != "dropped" for e in export_ledger(engine))
    # Balances count them already, in every read.
    want = {}
    ids = svc.miners.ids(e[0] for e in entries)
    for account, amount, _ in entries:
        want[ids[account]] = want.get(ids[account], 0) + amount
    assert {k: v for k, v in ledger_balances(engine).items() if v} == want
    some = next(a for a, _, r in entries if r == "dropped")
    hot = miner_balance(engine, some)
    assert hot is not None and hot[2] == want[ids[some]]
    # Written out 5 at a time, each chunk its own transaction, until nothing is left.
    chunks = []
    while n := materialize_backlog(engine, 5):
        chunks.append(n)
        assert {k: v for k, v in ledger_balances(engine).items() if v} == want
    assert chunks == [5, 5, 5, 3] and count(engine, "ledger_backlog") == 0
    lines = {(e["account"], e["amount"], e["reason"]) for e in export_ledger(engine)}
    assert lines == entries
    assert miner_balance(engine, some)[2] == want[ids[some]]  # type: ignore[index]


def test_a_reorg_cancels_what_is_not_written_and_a_return_resumes_it(
    svc: PoolService, engine: Engine
) -> None:
    svc.publish_distribution(312_500_000)
    before = ledger_balances(engine)
    svc.record_block(distribution_id=1, revenue=312_500_000, block_hash=b"\x02" * 32, height=7)
    credited = ledger_balances(engine)
    assert materialize_backlog(engine, 10) == 10  # 8 still waiting
    orphan_block(engine, 1)
    assert {k: v for k, v in ledger_balances(engine).items() if v} == {
        k: v for k, v in before.items() if v}
    assert drain_backlog(engine) == 0  # cancelled: nothing more comes
    revive_block(engine, 1)
    assert ledger_balances(engine) == credited
    assert drain_backlog(engine) == 8
    assert ledger_balances(engine) == credited
    # Reporting the same block again settles nothing, whatever the backlog holds: the first
    # record comes back (issue #13, one entry point keyed by block hash).
    again = svc.record_block(distribution_id=1, revenue=1, block_hash=b"\x02" * 32, height=7)
    assert not again.first and again.block.id == 1 and again.settlement is None
    assert ledger_balances(engine) == credited and drain_backlog(engine) == 0


def test_restart_resumes_the_backlog(svc: PoolService, engine: Engine, tmp_path: Path) -> None:
    svc.publish_distribution(312_500_000)
    svc.record_block(distribution_id=1, revenue=312_500_000, block_hash=b"\x03" * 32, height=9)
    credited = ledger_balances(engine)
    assert materialize_backlog(engine, 4) == 4
    again = PoolService(svc.settings, engine=engine)  # the process died and came back
    assert ledger_balances(again.engine) == credited
    assert drain_backlog(engine) == 14 and ledger_balances(engine) == credited
