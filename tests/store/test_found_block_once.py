"""Every found block recorded exactly once, and no crash between two commits strands one
(issue #13; ARCHITECTURE.md invariant 8), on SQLite and PostgreSQL against the kernel node:

- the node's BIP-22 answer: ``duplicate`` / ``inconclusive`` count as found only when its
  active chain holds the block (:func:`payouts.node.submit.submit_found_block`);
- the one entry point (:meth:`payouts.served.ServedPool.block_found` over
  :meth:`payouts.service.PoolService.record_block`) keyed by block hash: a second report
  records, settles, tracks and publishes nothing;
- start-up recovery: a block the node accepted but the store never recorded is recorded and
  tracked; a recorded block whose following distribution was never published gets one;
- an operator's musig2 fallback on a block recorded but not tracked tracks it first (no
  ``untracked-block``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payouts.node.kernel import KernelNode
from payouts.node.submit import submit_found_block
from payouts.served import ServedPool
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.lifecycle_store import load_settlements
from payouts.settlement.modes import SettlementMode
from payouts.settlement.runner import SettlementActionError, SettlementRunner
from payouts.store import repositories as repo
from payouts.store.ledger import export_ledger, list_blocks
from payouts.tx.block import Block
from tests.api.settle_helpers import (
    add_miners_and_shares,
    coinbase_outputs,
    fallback_signer,
    find_block,
    musig2_mode,
)
from tests.lifecycle.helpers import build, mine, run, submit, tip
from tests.store.conftest import count

POOL = "0014" + "aa" * 20
COINBASE = SettlementMode()


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, pool={"payout_script": POOL, "fee_bps": 100})


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


def served(svc: PoolService, node: KernelNode, mode: SettlementMode = COINBASE) -> ServedPool:
    runner = SettlementRunner(svc, node, mode=mode, interval=3600.0)
    return ServedPool(svc.settings, service=svc, node=node, runner=runner, rate_limit=None)


def paying_block(svc: PoolService, node: KernelNode) -> tuple[Block, int, int]:
    """A block on the node's tip paying a fresh distribution: (block, distribution id, T)."""
    add_miners_and_shares(svc, 3)
    revenue = node.chain.subsidy(tip(node) + 1)
    fitted = svc.publish_distribution(revenue)
    block = build(node, coinbase_outputs(COINBASE, fitted, revenue))
    return block, fitted.distribution.distribution_id, revenue


def test_the_nodes_answer_found_only_when_the_active_chain_holds_the_block(
        node: KernelNode) -> None:
    parent = run(node.tip()).block_hash
    first = node.build_block_on(parent, bytes.fromhex(POOL))
    got = run(submit_found_block(node, first.serialize(), first.hash))
    assert got.reason is None and got.found and not got.already_known
    again = run(submit_found_block(node, first.serialize(), first.hash))
    assert again.reason == "duplicate" and again.in_active_chain and again.found
    assert again.already_known
    # A rival of equal work stays on a side branch: "inconclusive", not in the active chain.
    rival = node.build_block_on(parent, bytes.fromhex(POOL))
    side = run(submit_found_block(node, rival.serialize(), rival.hash))
    assert side.reason == "inconclusive" and not side.in_active_chain and not side.found
    # The first block reorged out: a second report of it is not a found block any more.
    run(node.invalidate_block(first.hash))
    gone = run(submit_found_block(node, first.serialize(), first.hash))
    assert gone.reason is not None and not gone.found
    bad = run(submit_found_block(node, b"\x00" * 10, b"\x00" * 32))
    assert bad.reason == "Block decode failed" and not bad.found


def test_a_block_reported_twice_is_recorded_settled_tracked_and_followed_once(
        engine: Engine, node: KernelNode, tmp_path: Path) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    pool = served(svc, node)
    block, did, revenue = paying_block(svc, node)
    submit(node, block)
    first = run(pool.block_found(block_hash=block.hash, height=tip(node), distribution_id=did,
                                 revenue=revenue, coinbase=block.txs[0]))
    assert first is not None and first.first and first.settlement is not None
    ledger, events = export_ledger(engine), count(engine, "accounting_events")
    after_first = repo.last_distribution_id(engine)
    assert after_first == did + 1  # the fresh distribution that follows the block
    # The same block again: PushSolution after the node had it, a Mining Protocol share, ...
    second = run(pool.block_found(block_hash=block.hash, height=tip(node), distribution_id=did,
                                  revenue=revenue, coinbase=block.txs[0]))
    assert second is not None and not second.first and second.settlement is None
    assert second.block.id == first.block.id
    assert count(engine, "blocks") == 1 and list(load_settlements(engine)) == [first.block.id]
    assert export_ledger(engine) == ledger and count(engine, "accounting_events") == events
    assert repo.last_distribution_id(engine) == after_first  # nothing published again


def test_start_up_records_a_block_the_node_accepted_but_the_store_never_saw(
        engine: Engine, node: KernelNode, tmp_path: Path) -> None:
    """The process died after the node accepted the block, before its record committed."""
    svc = PoolService(settings(tmp_path), engine=engine)
    block, did, revenue = paying_block(svc, node)
    submit(node, block)
    mine(node, 2)  # the chain moved on meanwhile
    assert list_blocks(engine) == []
    restarted = served(PoolService(settings(tmp_path), engine=engine), node)
    [rec] = run(restarted.recover_found_blocks())
    assert (rec.block.block_hash, rec.block.distribution_id, rec.block.revenue) == (
        block.hash, did, revenue)
    assert load_settlements(engine)[rec.block.id].funding_txid == block.txs[0].txid
    assert repo.last_distribution_id(engine) == did + 1
    # Once: the next start finds nothing left to do.
    assert run(served(PoolService(settings(tmp_path), engine=engine), node)
               .recover_found_blocks()) == []
    assert count(engine, "blocks") == 1 and repo.last_distribution_id(engine) == did + 1


def test_start_up_publishes_the_distribution_a_recorded_block_was_missing(
        engine: Engine, node: KernelNode, tmp_path: Path) -> None:
    """The process died after the block's record, before the distribution that follows it."""
    svc = PoolService(settings(tmp_path), engine=engine)
    f = find_block(svc, node, COINBASE, n=3)
    did = f.fitted.distribution.distribution_id
    assert repo.last_distribution_id(engine) == did
    pool = served(PoolService(settings(tmp_path), engine=engine), node)
    assert run(pool.recover_found_blocks()) == []
    assert repo.last_distribution_id(engine) == did + 1
    run(pool.recover_found_blocks())
    assert repo.last_distribution_id(engine) == did + 1  # once


def test_musig2_fallback_on_a_recorded_but_untracked_block_tracks_it_first(
        engine: Engine, node: KernelNode, tmp_path: Path) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    mode = SettlementMode("musig2", musig2=musig2_mode(3))
    f = find_block(svc, node, mode, n=3, signer=fallback_signer(), track=False)
    assert load_settlements(engine) == {}
    runner = SettlementRunner(PoolService(settings(tmp_path), engine=engine), node, mode=mode,
                              interval=3600.0, fallback_signer=fallback_signer())
    with pytest.raises(SettlementActionError) as e:
        run(runner.fallback(f.block_id))
    assert e.value.code == "fallback-locked"  # not untracked-block: it is tracked now
    assert load_settlements(engine)[f.block_id].mode == "musig2"
