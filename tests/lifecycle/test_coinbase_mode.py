"""Coinbase mode on the kernel backend: found → confirmed → mature → paid at Core's exact
maturity height (tip ≥ height + 99, i.e. 100 confirmations: the coinbase is spendable in the
next block), plus the pure rules."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from payouts.errors import DuplicateKeyError, ValidationError
from payouts.node.interface import NodeError
from payouts.node.kernel import KernelNode
from payouts.settlement.lifecycle import SettlementLifecycle
from payouts.settlement.lifecycle_rules import (
    coinbase_spendable,
    confirmations,
    first_mature_tip,
    target_status,
)
from payouts.store.ledger import get_block, record_block
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from tests.lifecycle.helpers import MINER, build, mine, mine_to, run, step, submit


def test_maturity_rule_matches_core() -> None:
    # Core: nSpendHeight - coin.nHeight < 100 is premature; the mempool uses tip + 1.
    assert not coinbase_spendable(10, 108)  # 99 confirmations
    assert coinbase_spendable(10, 109)  # 100 confirmations: valid in block 110
    assert first_mature_tip(10) == 109
    assert confirmations(10, 109) == 100
    assert target_status("found", 10, 9, 1) == "found"
    assert target_status("found", 10, 10, 1) == "confirmed"
    assert target_status("found", 10, 109, 1) == "mature"
    assert target_status("mature", 10, 10, 1) == "mature"  # never backwards


def test_kernel_mempool_agrees_with_the_rule(node: KernelNode) -> None:
    """The node itself rejects the coinbase spend one block before the rule says mature."""
    mine(node, 1)
    cb = node.chain.blocks[0].txs[0]
    h = 1
    spend = Tx(2, (TxIn(OutPoint(cb.txid, 0)),), (TxOut(cb.outputs[0].value - 1000, MINER),))
    mine_to(node, first_mature_tip(h) - 1)
    with pytest.raises(NodeError, match="premature-spend-of-coinbase"):
        run(node.send_raw_transaction(spend.serialize()))
    mine(node, 1)
    assert run(node.test_mempool_accept([spend.serialize()]))[0].reason != (
        "bad-txns-premature-spend-of-coinbase"
    )


def test_coinbase_block_found_confirmed_mature_paid(engine: Engine, node: KernelNode) -> None:
    mine(node, 5)
    block = build(node, [TxOut(node.chain.subsidy(6), MINER)])
    rec = record_block(engine, height=6, block_hash=block.hash, revenue=node.chain.subsidy(6))
    lc = SettlementLifecycle(engine, node)
    assert lc.track_coinbase(rec.id) is True
    assert lc.track_coinbase(rec.id) is False  # idempotent
    assert step(lc) == []  # the node does not have it yet: still found
    assert _status(engine, rec.id) == "found"
    submit(node, block)
    assert step(lc) == ["confirmed"]
    assert step(lc) == []  # idempotent
    mine_to(node, first_mature_tip(6) - 1)  # 99 confirmations
    assert step(lc) == []
    assert _status(engine, rec.id) == "confirmed"
    mine(node, 1)  # 100 confirmations
    assert step(lc) == ["mature", "paid"]
    assert _status(engine, rec.id) == "paid"
    mine(node, 3)
    assert step(lc) == []
    # A new lifecycle on the same store has nothing to do.
    assert step(SettlementLifecycle(engine, node)) == []


def test_untracked_block_waits_at_mature(engine: Engine, node: KernelNode) -> None:
    mine(node, 1)
    bh = run(node.block_hash(1))
    assert bh is not None
    rec = record_block(engine, height=1, block_hash=bh, revenue=1)
    lc = SettlementLifecycle(engine, node)
    mine_to(node, 100)
    assert step(lc) == ["confirmed", "mature", "untracked"]
    assert step(lc) == []
    assert _status(engine, rec.id) == "mature"


def test_tracking_errors(engine: Engine, node: KernelNode) -> None:
    lc = SettlementLifecycle(engine, node)
    with pytest.raises(ValidationError) as e:
        lc.track_coinbase(999)
    assert e.value.code == "unknown-block"
    rec = record_block(engine, height=1, block_hash=b"\x01" * 32, revenue=1)
    lc.track_coinbase(rec.id)
    from payouts.settlement.lifecycle_store import create_settlement

    with pytest.raises(DuplicateKeyError):
        create_settlement(engine, rec.id, "ctv")
    with pytest.raises(ValidationError) as e2:
        create_settlement(engine, rec.id, "lightning")
    assert e2.value.code == "invalid-settlement-mode"


def _status(engine: Engine, block_id: int) -> str:
    b = get_block(engine, block_id)
    assert b is not None
    return b.status
