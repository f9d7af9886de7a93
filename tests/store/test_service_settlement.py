"""The settlement runner through the pool service, on SQLite and PostgreSQL, against the kernel
node (Bitcoin Core's consensus code): every recorded block is tracked in the pool's mode and
walked found → confirmed → mature → paid; a restart resumes from the store and never pays
twice; the background task polls on its interval, logs JSON events and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payouts.crypto import musig2 as mu
from payouts.crypto.schnorr import xonly_pubkey
from payouts.errors import ConfigError
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settings import Settings, load_settings
from payouts.settlement.ctv import CtvNotActiveError, CtvParams
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_settlements, load_txs
from payouts.settlement.modes import Musig2Mode, SettlementMode, check_mode_on_node
from payouts.settlement.payout_view import landings
from payouts.settlement.runner import SettlementRunner, settlement_states
from payouts.store.ledger import export_ledger, get_block
from payouts.tx.transaction import Tx
from tests.api.musig2_signing import assert_outputs_on_chain
from tests.api.settle_helpers import FALLBACK_DELAY, FALLBACK_SK, find_block, miner_sk, musig2_mode
from tests.lifecycle.helpers import kinds, mine, mine_to, run
from tests.store.conftest import count

POOL = "0014" + "aa" * 20
CTV = SettlementMode("ctv", CtvParams(arity=2))


def settings(tmp_path: Path, mode: str = "coinbase") -> Settings:
    return Settings(data_dir=tmp_path, pool={"payout_script": POOL, "fee_bps": 100},
                    distribution={"mode": mode})


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


def poll(runner: SettlementRunner) -> list[str]:
    return kinds(run(runner.poll_once()))


def status(engine: Engine, block_id: int) -> str:
    b = get_block(engine, block_id)
    assert b is not None
    return b.status


def test_coinbase_mode_paid_at_maturity_and_restart_pays_nothing_twice(
    engine: Engine, node: KernelNode, tmp_path: Path
) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    f = find_block(svc, node, SettlementMode())
    assert load_settlements(engine)[f.block_id].mode == "coinbase"
    assert poll(f.runner) == ["confirmed"]
    mine_to(node, first_mature_tip(f.height) - 1)
    assert poll(f.runner) == []  # 99 confirmations: not mature
    mine(node, 1)
    assert poll(f.runner) == ["mature", "paid"]
    assert status(engine, f.block_id) == "paid"
    # Every payout is where the API will say it landed: the coinbase output, checked on the
    # kernel's UTXO set (txid, vout, amount, script).
    block = get_block(engine, f.block_id)
    assert block is not None
    land = landings(block, f.fitted, load_settlements(engine)[f.block_id], [])
    assert set(land) == set(f.fitted.accounts) and len(land) == 4
    for account, where in land.items():
        utxo = run(node.get_utxo(where.txid, where.vout))
        assert where.txid == f.block.txs[0].txid
        i = f.fitted.accounts.index(account)
        assert utxo is not None and utxo.is_coinbase
        assert (utxo.value, utxo.script) == (where.amount, f.fitted.distribution.payouts[i].script)
    ledger = export_ledger(engine)
    # Restart: a new service and runner on the same store resume; nothing is paid again.
    svc2 = PoolService(settings(tmp_path), engine=engine)
    runner2 = SettlementRunner(svc2, node, interval=3600.0)
    assert poll(runner2) == []
    mine(node, 3)
    assert poll(runner2) == []
    assert status(engine, f.block_id) == "paid" and export_ledger(engine) == ledger
    assert settlement_states(engine)["paid"] == 1


def test_ctv_mode_restart_mid_broadcast_never_builds_or_pays_twice(
    engine: Engine, node: KernelNode, tmp_path: Path
) -> None:
    svc = PoolService(settings(tmp_path, "ctv"), engine=engine)
    f = find_block(svc, node, CTV, n=5)
    rows = load_txs(engine, f.block_id)
    s = load_settlements(engine)[f.block_id]
    # Bound at once to the found coinbase's commitment output: the exit paths are final.
    assert s.mode == "ctv" and s.funding_txid == f.block.txs[0].txid and s.funding_vout == 0
    assert Tx.parse(rows[0].raw).inputs[0].prevout.txid == f.block.txs[0].txid
    n = len(rows)
    assert n >= 3  # arity 2: a real tree
    mine_to(node, first_mature_tip(f.height))
    assert poll(f.runner) == ["confirmed", "mature", "broadcast"]  # the root only
    assert settlement_states(engine)["broadcasting"] == 1
    # Restart before the root confirms.
    svc2 = PoolService(settings(tmp_path, "ctv"), engine=engine)
    runner2 = SettlementRunner(svc2, node, interval=3600.0)
    assert poll(runner2) == []  # the same bytes re-sent: already in the mempool
    for _ in range(n):
        mine(node, 1)
        if "paid" in poll(runner2):
            break
    assert status(engine, f.block_id) == "paid"
    assert count(engine, "settlement_txs") == n  # nothing built twice
    block = get_block(engine, f.block_id)
    assert block is not None
    land = landings(block, f.fitted, load_settlements(engine)[f.block_id],
                    load_txs(engine, f.block_id))
    assert len(land) == 5
    for where in land.values():
        utxo = run(node.get_utxo(where.txid, where.vout))
        assert utxo is not None and utxo.value == where.amount and where.status == "confirmed"


def test_a_coinbase_without_the_modes_output_is_not_tracked(
    engine: Engine, node: KernelNode, tmp_path: Path
) -> None:
    svc = PoolService(settings(tmp_path, "ctv"), engine=engine)
    runner = SettlementRunner(svc, node, mode=CTV, interval=3600.0)
    # The block pays in coinbase form, but the runner settles in ctv: it must not guess.
    f = find_block(svc, node, SettlementMode(), runner=runner)
    assert f.block_id not in load_settlements(engine)
    mine_to(node, first_mature_tip(f.height))
    assert poll(runner) == ["confirmed", "mature", "untracked"]
    assert status(engine, f.block_id) == "mature"


def test_a_node_far_behind_the_store_orphans_nothing(
    engine: Engine, node: KernelNode, tmp_path: Path
) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    f = find_block(svc, node, SettlementMode())
    mine_to(node, first_mature_tip(f.height) + 5)
    assert poll(f.runner) == ["confirmed", "mature", "paid"]
    ledger = export_ledger(engine)
    with KernelNode() as fresh:  # e.g. the embedded node after a restart: a new chain
        runner = SettlementRunner(PoolService(settings(tmp_path), engine=engine), fresh,
                                  interval=3600.0)
        assert poll(runner) == []
    assert status(engine, f.block_id) == "paid" and export_ledger(engine) == ledger


def test_background_task_polls_logs_json_and_stops(
    engine: Engine, node: KernelNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    runner = SettlementRunner(svc, node, interval=0.02)

    f = find_block(svc, node, SettlementMode(), runner=runner)

    async def scenario() -> None:
        task = runner.start()
        await node.generate_to_script(99, bytes.fromhex("5120" + "ab" * 32))
        for _ in range(500):
            if status(engine, f.block_id) == "paid":
                break
            await asyncio.sleep(0.02)
        await runner.stop()
        assert task.done() and task.cancelled()
        assert status(engine, f.block_id) == "paid"

    with caplog.at_level(logging.INFO, logger="payouts.settlement.events"):
        asyncio.run(scenario())
    events = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "payouts.settlement.events"]
    assert [e["event"] for e in events] == ["confirmed", "mature", "paid"]
    assert all(isinstance(e["block_id"], int) and "ts" in e for e in events)


def test_poll_interval_setting_default_and_validation(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).settlement.poll_interval_sec == 10.0
    for bad in (0, -1, 10_000):
        with pytest.raises(ConfigError, match=r"settlement\.poll_interval_sec"):
            load_settings(data_dir=tmp_path, settlement={"poll_interval_sec": bad})


def test_musig2_mode_needs_its_settings_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"distribution\.mode = musig2 needs a "
                                          r"\[settlement\.musig2\] table: committee"):
        load_settings(data_dir=tmp_path, distribution={"mode": "musig2"})


def test_musig2_mode_and_fallback_signer_from_the_settings(
    engine: Engine, node: KernelNode, tmp_path: Path
) -> None:
    """[settlement.musig2] alone gives the runner its mode (the same object the tests build by
    hand) and a fallback signer whose spend the kernel accepts once BIP-68 allows it."""
    keys = [mu.individual_pubkey(miner_sk(i)).hex() for i in range(4)]
    cfg = Settings(data_dir=tmp_path, pool={"payout_script": POOL},
                   distribution={"mode": "musig2"},
                   settlement={"musig2": {
                       "committee": keys[::-1], "fallback_key": xonly_pubkey(FALLBACK_SK).hex(),
                       "fallback_timelock": FALLBACK_DELAY, "fee_rate": 2,
                       "fallback_secret_key": FALLBACK_SK.hex()}})
    svc = PoolService(cfg, engine=engine)
    runner = SettlementRunner(svc, node, interval=3600.0)
    assert runner.mode == SettlementMode("musig2", musig2=musig2_mode(4))
    f = find_block(svc, node, runner.mode, runner=runner)
    mine_to(node, first_mature_tip(f.height))
    assert poll(runner) == ["confirmed", "mature", "bound", "signing-started"]
    mine_to(node, f.height + FALLBACK_DELAY - 1)  # the next block may hold the fallback
    report = run(runner.fallback(f.block_id))
    assert [e.kind for e in report.events] == ["signing-failed", "broadcast"]
    assert [r.result for r in report.sent] == ["accepted"]
    mine(node, 1)
    assert poll(runner) == ["tx-confirmed", "paid"]
    (row,) = load_txs(engine, f.block_id)
    assert row.role == "fallback"
    assert_outputs_on_chain(node, row)


def test_ctv_leaf_is_refused_on_a_node_without_ctv(node: KernelNode) -> None:
    m = musig2_mode(3)
    leaf = SettlementMode("musig2", musig2=Musig2Mode(m.committee, m.fallback_timelock,
                                                      m.fallback_key, ctv_leaf=True))
    with pytest.raises(ConfigError, match=r"ctv_leaf = true, but CTV \(BIP-119\) is not active"):
        run(check_mode_on_node(leaf, node))
    run(check_mode_on_node(SettlementMode("musig2", musig2=m), node))  # no leaf: fine


def test_ctv_mode_is_refused_at_start_on_a_node_without_ctv(node: KernelNode) -> None:
    """ARCHITECTURE invariant 4 for ``payouts serve`` even with the JD server off: the kernel
    node does not enforce BIP-119, so a ctv runner must not start on it."""
    with pytest.raises(CtvNotActiveError, match="payouts serve refuses a ctv settlement"):
        run(check_mode_on_node(SettlementMode("ctv", CtvParams(arity=2)), node))
    run(check_mode_on_node(SettlementMode("coinbase"), node))


def test_a_real_reorg_still_orphans_through_the_runner(
    engine: Engine, node: KernelNode, tmp_path: Path
) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    f = find_block(svc, node, SettlementMode())
    mine(node, 3)
    assert poll(f.runner) == ["confirmed"]
    run(node.invalidate_block(f.block.hash))  # the node saw it: a reorg, not another chain
    assert poll(f.runner) == ["orphaned"]
    assert status(engine, f.block_id) == "orphaned"
    assert sum(e["amount"] for e in export_ledger(engine) if e["block_id"] == f.block_id) == 0


@pytest.mark.parametrize("mode", [SettlementMode(), CTV], ids=["coinbase", "ctv"])
def test_a_block_recorded_but_never_tracked_is_tracked_at_the_next_step(
    engine: Engine, node: KernelNode, tmp_path: Path, mode: SettlementMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #13: record_block committed the block and its ledger lines, and the process died
    before the runner tracked it. The next runner's first step tracks it, with its coinbase read
    from the node and checked as on the live path; nothing is stranded."""
    svc = PoolService(settings(tmp_path, mode.name), engine=engine)
    f = find_block(svc, node, mode, n=3, track=False)
    assert load_settlements(engine) == {}
    restarted = SettlementRunner(PoolService(settings(tmp_path, mode.name), engine=engine), node,
                                 mode=mode, interval=3600.0)
    with caplog.at_level(logging.WARNING, logger="payouts.settlement"):
        assert poll(restarted) == ["confirmed"]
    assert "was recorded but not tracked (the process stopped in between): tracked now" in (
        caplog.text)
    s = load_settlements(engine)[f.block_id]
    assert s.mode == mode.name and s.funding_txid == f.block.txs[0].txid
    if mode.name == "ctv":
        assert load_txs(engine, f.block_id)  # the fan-out tree, bound to the real coinbase
    caplog.clear()
    assert poll(restarted) == [] and "tracked now" not in caplog.text  # once


def test_a_recorded_block_lacking_the_mode_outputs_stays_untracked_and_is_logged_once(
    engine: Engine, node: KernelNode, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    svc = PoolService(settings(tmp_path, "ctv"), engine=engine)
    f = find_block(svc, node, SettlementMode(), n=3, track=False)  # a coinbase-mode block
    runner = SettlementRunner(svc, node, mode=CTV, interval=3600.0)
    with caplog.at_level(logging.ERROR, logger="payouts.settlement"):
        poll(runner)
        poll(runner)
    assert caplog.text.count("lacks the CTV commitment output") == 1
    assert f.block_id not in load_settlements(engine)
