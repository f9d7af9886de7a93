"""Reorgs on the kernel backend (invalidateblock/reconsiderblock emulated by KernelNode, and a
competing branch): at found, confirmed and mature (mid-fan-out) the block is orphaned, its
ledger lines reversed exactly and its broadcast spends forgotten; when it comes back it is
re-recorded and settles again, paying once."""

from __future__ import annotations

from sqlalchemy import Engine

from payouts.node.kernel import KernelNode
from payouts.settlement.ctv import CtvParams
from payouts.settlement.lifecycle import LifecycleEvent, SettlementLifecycle
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_settlements, load_txs
from payouts.store.ledger import (
    BlockRecord,
    LedgerCredit,
    get_block,
    ledger_balances,
    record_block,
)
from payouts.tx.txout import TxOut
from tests.lifecycle.helpers import MINER, build, mine, mine_to, run, step, submit, tip
from tests.lifecycle.test_ctv_mode import assert_paid_exactly, setup_ctv


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def on_orphaned(self, block: BlockRecord) -> None:
        self.calls.append(("orphaned", block.id))

    def on_returned(self, block: BlockRecord) -> None:
        self.calls.append(("returned", block.id))

    def on_paid(self, block: BlockRecord) -> None:
        self.calls.append(("paid", block.id))


def _status(engine: Engine, block_id: int) -> str:
    b = get_block(engine, block_id)
    assert b is not None
    return b.status


def test_reorg_at_found_orphans_a_stale_block(
    engine: Engine, node: KernelNode, miner_id: int
) -> None:
    mine(node, 3)
    ours = build(node, [TxOut(node.chain.subsidy(4), MINER)])  # never reaches the node
    rec = record_block(
        engine,
        height=4,
        block_hash=ours.hash,
        revenue=1,
        credits=[LedgerCredit(miner_id, 700, "owed")],
    )
    lc = SettlementLifecycle(engine, node)
    lc.track_coinbase(rec.id)
    assert step(lc) == []  # height 4 not reached: still found
    mine(node, 1)  # someone else's block at height 4
    assert step(lc) == ["orphaned"]
    assert _status(engine, rec.id) == "orphaned"
    assert ledger_balances(engine) == {miner_id: 0}
    assert step(lc) == []


def test_reorg_at_confirmed_and_return(engine: Engine, node: KernelNode, miner_id: int) -> None:
    mine(node, 3)
    block = build(node, [TxOut(node.chain.subsidy(4), MINER)])
    submit(node, block)
    rec = record_block(
        engine,
        height=4,
        block_hash=block.hash,
        revenue=1,
        credits=[LedgerCredit(miner_id, 700, "owed")],
    )
    listener = Recorder()
    lc = SettlementLifecycle(engine, node, listener=listener)
    lc.track_coinbase(rec.id)
    mine(node, 5)
    assert step(lc) == ["confirmed"]
    run(node.invalidate_block(block.hash))
    assert step(lc) == ["orphaned"]
    assert ledger_balances(engine) == {miner_id: 0}  # exact reversal
    assert load_settlements(engine)[rec.id].phase == "rolled-back"
    run(node.reconsider_block(block.hash))
    assert step(lc) == ["returned"]
    assert _status(engine, rec.id) == "found"
    assert ledger_balances(engine) == {miner_id: 700}  # re-recorded exactly once
    assert step(lc) == ["confirmed"]
    # A second round trip nets the same way.
    run(node.invalidate_block(block.hash))
    assert step(lc) == ["orphaned"]
    assert ledger_balances(engine) == {miner_id: 0}
    run(node.reconsider_block(block.hash))
    assert step(lc) == ["returned"]
    mine_to(node, first_mature_tip(4))
    assert step(lc) == ["confirmed", "mature", "paid"]
    assert ledger_balances(engine) == {miner_id: 700}
    assert listener.calls == [
        ("orphaned", rec.id),
        ("returned", rec.id),
        ("orphaned", rec.id),
        ("returned", rec.id),
        ("paid", rec.id),
    ]


def test_reorg_by_a_longer_competing_branch(engine: Engine, node: KernelNode) -> None:
    mine(node, 2)
    fork_point = run(node.block_hash(2))
    assert fork_point is not None
    block = build(node, [TxOut(node.chain.subsidy(3), MINER)])
    submit(node, block)
    rec = record_block(engine, height=3, block_hash=block.hash, revenue=1)
    lc = SettlementLifecycle(engine, node)
    lc.track_coinbase(rec.id)
    assert step(lc) == ["confirmed"]
    parent = fork_point
    for i in range(2):  # two blocks on the fork beat our one
        other = node.build_block_on(parent, MINER, tag=b"/fork" + bytes([i]) + b"/")
        run(node.submit_block(other.serialize()))
        parent = other.hash
    assert run(node.block_hash(3)) != block.hash
    assert step(lc) == ["orphaned"]


def test_reorg_at_mature_mid_fanout_then_return_pays_once(engine: Engine, node: KernelNode) -> None:
    block_id, h, fanout, wallet = setup_ctv(engine, node, CtvParams(arity=4))
    block_hash = run(node.block_hash(h))
    assert block_hash is not None
    lc = SettlementLifecycle(engine, node, fee_wallet=wallet)
    lc.track_ctv(block_id, fanout)
    mine_to(node, first_mature_tip(h))
    step(lc)  # mature, root broadcast
    mine(node, 1)
    step(lc)  # root confirmed, level 1 broadcast
    assert _status(engine, block_id) == "mature"
    run(node.invalidate_block(block_hash))
    assert tip(node) == h - 1
    events: list[LifecycleEvent] = run(lc.step(0))
    assert [e.kind for e in events] == ["orphaned"]
    rows = load_txs(engine, block_id)
    assert {r.role for r in rows} == {"fanout"}  # CPFP children forgotten
    assert all(r.status == "planned" and r.confirmed_block is None for r in rows)
    assert not wallet.reserved  # their coins are free again
    assert step(lc) == []
    # The block comes back (with the blocks that confirmed the root): settle again, once.
    run(node.reconsider_block(block_hash))
    assert step(lc) == ["returned"]
    again = step(lc)  # the root is found confirmed in the returning chain; level 1 goes out
    assert again[:3] == ["confirmed", "mature", "tx-confirmed"] and "broadcast" in again
    assert "rejected" not in again  # the spent fee coin of the old root child is skipped
    for _ in range(4):
        mine(node, 1)
        if "paid" in step(lc):
            break
    assert _status(engine, block_id) == "paid"
    assert_paid_exactly(node, fanout)
    fan = [r for r in load_txs(engine, block_id) if r.role == "fanout"]
    assert all(r.status == "confirmed" for r in fan)
