"""CTV mode on the kernel backend: at maturity the fan-out tree is bound to the coinbase,
broadcast level by level (each tx with a CPFP child through its P2A anchor, paid from the
pool's fee wallet) and mined until every payee holds its exact amount; a restart mid-broadcast
resumes without a second child or a second payment.

libbitcoinkernel does not enforce CTV (OP_CTV is OP_NOP4 there, and the node reports it
inactive), so the tree is built with ``build_ctv_fanout`` (no activation check) and the kernel
checks amounts, scripts, maturity and the children's signatures; CTV enforcement is the
bitcoind (Inquisition) integration suite's job.
"""

from __future__ import annotations

from sqlalchemy import Engine

from payouts.node.kernel import KernelNode
from payouts.settlement.ctv import CtvFanout, CtvParams, build_ctv_fanout
from payouts.settlement.lifecycle import SettlementLifecycle
from payouts.settlement.lifecycle_fees import FeeUtxo, FeeWallet
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_txs
from payouts.store.ledger import get_block, record_block
from payouts.tx.hashes import sha256
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut
from tests.lifecycle.helpers import build, make_dist, mine, mine_to, run, step, submit, tip

WALLET_SK = sha256(b"lifecycle test fee wallet")


def fund_wallet(node: KernelNode, n: int) -> FeeWallet:
    """``n`` coinbase coins paying the fee wallet (they mature before the CTV block does)."""
    wallet = FeeWallet(WALLET_SK)
    for _ in range(n):
        h = tip(node) + 1
        block = build(node, [TxOut(node.chain.subsidy(h), wallet.script)])
        submit(node, block)
        wallet.add([FeeUtxo(OutPoint(block.txs[0].txid, 0), block.txs[0].outputs[0].value)])
    return wallet


def setup_ctv(
    engine: Engine, node: KernelNode, params: CtvParams
) -> tuple[int, int, CtvFanout, FeeWallet]:
    wallet = fund_wallet(node, 8)
    h = tip(node) + 1
    fanout = build_ctv_fanout(make_dist(12), node.chain.subsidy(h), params)
    block = build(node, fanout.coinbase_outputs)
    submit(node, block)
    rec = record_block(engine, height=h, block_hash=block.hash, revenue=node.chain.subsidy(h))
    return rec.id, h, fanout.bind(OutPoint(block.txs[0].txid, 0)), wallet


def assert_paid_exactly(node: KernelNode, fanout: CtvFanout) -> None:
    for e in fanout.exits:
        utxo = run(node.get_utxo(fanout.txs[e.path[-1]].tx.txid, e.vout))
        assert utxo is not None and not utxo.is_coinbase
        assert (utxo.value, utxo.script) == (e.output.value, e.output.script)


def test_ctv_tree_broadcast_level_by_level_until_paid(engine: Engine, node: KernelNode) -> None:
    block_id, h, fanout, wallet = setup_ctv(engine, node, CtvParams(arity=4))
    n = len(fanout.txs)
    assert fanout.depth == 2 and n >= 3
    lc = SettlementLifecycle(engine, node, fee_wallet=wallet)
    assert lc.track_ctv(block_id, fanout) is True
    assert step(lc) == ["confirmed"]
    mine_to(node, first_mature_tip(h) - 1)
    assert step(lc) == []  # 99 confirmations: nothing may be broadcast yet
    mine(node, 1)
    assert step(lc) == ["mature", "bound", "broadcast"]  # the root, with its CPFP child
    assert [r.status for r in _rows(engine, block_id, "fanout")] == ["broadcast"] + ["planned"] * (
        n - 1
    )
    assert step(lc) == []  # re-sending the same package is a no-op
    confirmed_at: dict[int, int] = {}
    for _ in range(fanout.depth + 1):
        mine(node, 1)
        events = step(lc)
        for r in _rows(engine, block_id, "fanout"):
            if r.confirmed_height is not None:
                confirmed_at.setdefault(r.seq, r.confirmed_height)
        if "paid" in events:
            break
    assert get_block(engine, block_id).status == "paid"  # type: ignore[union-attr]
    # Level by level: every child confirmed strictly after its parent.
    for t_i, t in enumerate(fanout.txs):
        if t.parent is not None:
            assert confirmed_at[t_i] > confirmed_at[t.parent]
    assert_paid_exactly(node, fanout)
    # The persisted txids are the bound tree's (same bytes the library produced).
    assert [r.txid for r in _rows(engine, block_id, "fanout")] == [t.tx.txid for t in fanout.txs]
    # One child per tree tx, each confirmed, each paying the package rate from its own coin.
    children = _rows(engine, block_id, "cpfp")
    assert len(children) == n and all(c.status == "confirmed" for c in children)
    assert len({Tx.parse(c.raw).inputs[1].prevout for c in children}) == n
    for c in children:
        parent = fanout.txs[c.seq].tx
        child = Tx.parse(c.raw)
        spent = next(x for x in wallet.coins if x.outpoint == child.inputs[1].prevout)
        child_fee = spent.value - child.output_value()  # the 0-value anchor adds nothing
        assert child_fee == parent.vsize + child.vsize  # 1 sat/vB for the package, exactly
    assert step(lc) == []


def test_fee_paying_tree_without_wallet(engine: Engine, node: KernelNode) -> None:
    """A tree that pays its own fee (240-sat anchors) goes out tx by tx with no child."""
    block_id, h, fanout, _ = setup_ctv(engine, node, CtvParams(arity=4, fee_rate=2))
    lc = SettlementLifecycle(engine, node)
    lc.track_ctv(block_id, fanout)
    mine_to(node, first_mature_tip(h))
    for _ in range(fanout.depth + 2):
        step(lc)
        mine(node, 1)
    assert "paid" in step(lc) or get_block(engine, block_id).status == "paid"  # type: ignore[union-attr]
    assert _rows(engine, block_id, "cpfp") == []
    assert_paid_exactly(node, fanout)


def test_restart_mid_broadcast_resumes_without_paying_twice(
    engine: Engine, node: KernelNode
) -> None:
    block_id, h, fanout, wallet = setup_ctv(engine, node, CtvParams(arity=4))
    coins = list(wallet.coins)
    lc = SettlementLifecycle(engine, node, fee_wallet=wallet)
    lc.track_ctv(block_id, fanout)
    mine_to(node, first_mature_tip(h))
    step(lc)  # root + child broadcast
    mine(node, 1)
    step(lc)  # root confirmed; level 1 (its txs + their children) broadcast, not mined
    n = len(fanout.txs)
    assert len(_rows(engine, block_id, "cpfp")) == n
    del lc  # "crash"
    # A new process: a fresh wallet object with the same coins, a fresh lifecycle.
    wallet2 = FeeWallet(WALLET_SK, list(coins))
    lc2 = SettlementLifecycle(engine, node, fee_wallet=wallet2)
    lc2.track_ctv(block_id, fanout)  # re-tracking is a no-op
    assert len(wallet2.reserved) == n  # the persisted children's coins stay reserved
    assert step(lc2) == []  # re-sends the same bytes only
    assert len(_rows(engine, block_id, "cpfp")) == n
    mine(node, 1)
    assert "paid" in step(lc2)
    assert_paid_exactly(node, fanout)
    assert len(_rows(engine, block_id, "cpfp")) == n


def _rows(engine: Engine, block_id: int, role: str) -> list:  # type: ignore[type-arg]
    return sorted((r for r in load_txs(engine, block_id) if r.role == role), key=lambda r: r.seq)
