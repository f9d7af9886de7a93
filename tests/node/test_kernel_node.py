"""KernelNode through the async Node API: mempool accept/reject reasons, templates, blocks,
eviction, reorgs. Each test gets a fresh 101-block in-memory chain (~50 ms)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from fractions import Fraction
from typing import TypeVar

import pytest

from payouts.crypto.schnorr import xonly_pubkey
from payouts.crypto.taproot import p2tr_script, sign_keypath, tweak_pubkey
from payouts.node.interface import Node, NodeError
from payouts.node.kernel import KernelNode
from payouts.tx.block import Block
from payouts.tx.coinbase import build_coinbase, witness_commitment
from payouts.tx.sighash import taproot_sighash
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

T = TypeVar("T")
SECKEY = bytes.fromhex("6b973d88838f27366ed61c9ad6367663045cb456e28335c109e30717ae0c6baa")
P2TR = p2tr_script(tweak_pubkey(xonly_pubkey(SECKEY))[0])
OTHER = b"\x51\x20" + bytes(range(32))  # a P2TR output we never spend
P2PK_LIKE = b"\x21" + b"\x02" * 33 + b"\xac"  # 1 legacy sigop -> sigop cost 4
COIN = 100_000_000


def run(aw: Awaitable[T]) -> T:
    """pytest-asyncio is not a dependency: drive each coroutine with asyncio.run."""

    async def wrap() -> T:
        return await aw

    return asyncio.run(wrap())


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        run(n.generate(101, P2TR))
        yield n


def coinbase_outpoint(node: KernelNode, height: int) -> tuple[OutPoint, TxOut]:
    cb = node.chain.blocks[height - 1].txs[0]
    return OutPoint(cb.txid, 0), cb.outputs[0]


def spend(
    prevs: list[tuple[OutPoint, TxOut]],
    outputs: list[TxOut],
    *,
    sequence: int = 0xFFFFFFFF,
    locktime: int = 0,
    version: int = 2,
) -> Tx:
    """A key-path signed spend of P2TR outputs of SECKEY."""
    unsigned = Tx(
        version, tuple(TxIn(op, sequence=sequence) for op, _ in prevs), tuple(outputs), locktime
    )
    spent = [o for _, o in prevs]
    tx = unsigned
    for i in range(len(prevs)):
        tx = tx.with_input_witness(i, [sign_keypath(taproot_sighash(unsigned, i, spent), SECKEY)])
    return tx


def send_reject(node: KernelNode, tx: Tx | bytes) -> str:
    raw = tx if isinstance(tx, bytes) else tx.serialize()
    with pytest.raises(NodeError) as ei:
        run(node.send_raw_transaction(raw))
    return ei.value.reason


def test_is_a_node_and_reports_regtest_facts(node: KernelNode) -> None:
    assert isinstance(node, Node)
    assert run(node.deployment_active("checktemplateverify")) is False  # kernel has no CTV
    assert run(node.deployment_active("segwit")) and run(node.deployment_active("taproot"))
    # regtest's powLimit 0x207fffff exactly: 0xffff·2^208 / (0x7fffff·2^232) ≈ 4.66e-10
    assert run(node.network_difficulty()) == Fraction(0xFFFF << 208, 0x7FFFFF << 232)
    assert run(node.network_difficulty()) == Fraction(65535, 140737471578112)
    tip = run(node.tip())
    assert (tip.height, tip.bits) == (101, 0x207FFFFF)
    assert tip.block_hash == node.chain.tip_hash == run(node.block_hash(101))
    assert tip.median_time_past < tip.time


def test_accept_matured_coinbase_spend_and_lookup_by_wtxid(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    tx = spend([(op, out)], [TxOut(out.value - 1000, OTHER)])
    assert run(node.send_raw_transaction(tx.serialize())) == tx.txid
    assert run(node.mempool_txs([tx.wtxid, bytes(32)])) == [tx, None]
    assert tx.wtxid != tx.txid  # looked up by the witness hash, not the txid


def test_coinbase_maturity_boundary(node: KernelNode) -> None:
    # Tip 101, next block 102: the coinbase of block 2 is at depth 100 (ok), of block 3 at 99.
    op2, out2 = coinbase_outpoint(node, 2)
    run(
        node.send_raw_transaction(
            spend([(op2, out2)], [TxOut(out2.value - 500, OTHER)]).serialize()
        )
    )
    op3, out3 = coinbase_outpoint(node, 3)
    reason = send_reject(node, spend([(op3, out3)], [TxOut(out3.value - 500, OTHER)]))
    assert reason.startswith("bad-txns-premature-spend-of-coinbase")
    assert "depth 99" in reason


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "bad-txns-inputs-missingorspent"),
        ("belowout", "bad-txns-in-belowout"),
        ("badsig", "mandatory-script-verify-flag-failed"),
        ("decode", "TX decode failed"),
        ("duplicate-input", "bad-txns-inputs-duplicate"),
        ("nonfinal", "non-final"),
        ("bip68", "non-BIP68-final"),
    ],
)
def test_reject_reasons(node: KernelNode, case: str, expected: str) -> None:
    op, out = coinbase_outpoint(node, 1)
    tx: Tx | bytes
    if case == "missing":
        tx = spend([(OutPoint(b"\x11" * 32, 0), out)], [TxOut(1000, OTHER)])
    elif case == "belowout":
        tx = spend([(op, out)], [TxOut(out.value + 1, OTHER)])
    elif case == "badsig":
        good = spend([(op, out)], [TxOut(out.value - 1000, OTHER)])
        sig = bytearray(good.inputs[0].witness[0])
        sig[5] ^= 1
        tx = good.with_input_witness(0, [bytes(sig)])
    elif case == "decode":
        tx = spend([(op, out)], [TxOut(1, OTHER)]).serialize()[:-3]
    elif case == "duplicate-input":
        tx = spend([(op, out), (op, out)], [TxOut(1000, OTHER)])
    elif case == "nonfinal":  # height locktime at the next block is not final yet
        tx = spend([(op, out)], [TxOut(1000, OTHER)], sequence=0xFFFFFFFE, locktime=102)
    else:  # BIP-68: a coin at height 1 with 102 blocks of relative lock is spendable at 103
        tx = spend([(op, out)], [TxOut(1000, OTHER)], sequence=102)
    assert send_reject(node, tx).startswith(expected)
    assert node.mempool.entries == {}  # a rejection changes nothing


def test_relative_and_absolute_locks_at_their_edges_are_accepted(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    tx = spend([(op, out)], [TxOut(1000, OTHER)], sequence=0xFFFFFFFE, locktime=101)
    run(node.send_raw_transaction(tx.serialize()))
    op, out = coinbase_outpoint(node, 2)
    run(
        node.send_raw_transaction(
            spend([(op, out)], [TxOut(1000, OTHER)], sequence=100).serialize()
        )
    )


def test_conflicts_and_chained_spends(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    parent = spend([(op, out)], [TxOut(out.value - 1000, P2TR)])
    run(node.send_raw_transaction(parent.serialize()))
    assert send_reject(node, parent) == "txn-already-in-mempool"
    # Same coin, different tx: a conflict (no RBF in the kernel mempool).
    rival = spend([(op, out)], [TxOut(out.value - 5000, OTHER)])
    assert send_reject(node, rival).startswith("txn-mempool-conflict")
    # A child of the unconfirmed parent is fine; a second child of the same output conflicts.
    pop, pout = OutPoint(parent.txid, 0), parent.outputs[0]
    child = spend([(pop, pout)], [TxOut(pout.value - 2000, P2TR)])
    run(node.send_raw_transaction(child.serialize()))
    sibling = spend([(pop, pout)], [TxOut(pout.value - 9000, OTHER)])
    assert send_reject(node, sibling).startswith("txn-mempool-conflict")
    # A spend of a nonexistent output of the parent is missing.
    assert send_reject(
        node, spend([(OutPoint(parent.txid, 7), pout)], [TxOut(1, OTHER)])
    ).startswith("bad-txns-inputs-missingorspent")


def test_template_orders_parents_first_with_fees_and_sigops(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    parent = spend([(op, out)], [TxOut(out.value - 6000, P2TR), TxOut(5000, P2PK_LIKE)])
    child = spend(
        [(OutPoint(parent.txid, 0), parent.outputs[0])],
        [TxOut(parent.outputs[0].value - 2500, OTHER)],
    )
    op2, out2 = coinbase_outpoint(node, 2)
    lone = spend([(op2, out2)], [TxOut(out2.value - 700, OTHER)])
    for tx in (parent, child, lone):
        run(node.send_raw_transaction(tx.serialize()))
    t = run(node.block_template())
    assert [x.tx for x in t.transactions] == [parent, child, lone]
    assert [x.fee for x in t.transactions] == [1000, 2500, 700]
    assert [x.sigops for x in t.transactions] == [4, 0, 0]
    assert t.fees == 4200
    assert t.coinbase_value == 50 * COIN + 4200
    assert (t.height, t.prev_hash, t.bits, t.version) == (
        102,
        node.chain.tip_hash,
        0x207FFFFF,
        0x20000000,
    )
    assert t.curtime > run(node.tip()).median_time_past


def block_from_template(node: KernelNode, script: bytes, value_delta: int = 0) -> Block:
    """What a pool does with a template: its own coinbase, the template's txs."""
    t = run(node.block_template())
    txs = [x.tx for x in t.transactions]
    cb = build_coinbase(
        t.height,
        [TxOut(t.coinbase_value + value_delta, script)],
        b"\x00" * 8,
        tag=b"/test/",
        commitment=witness_commitment([x.wtxid for x in txs]),
    )
    return node.chain.block_with_coinbase(cb, txs)


def test_submit_block_evicts_mined_and_conflicting(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    a = spend([(op, out)], [TxOut(out.value - 1000, P2TR)])
    run(node.send_raw_transaction(a.serialize()))
    op2, out2 = coinbase_outpoint(node, 2)
    b = spend([(op2, out2)], [TxOut(out2.value - 1000, P2TR)])
    run(node.send_raw_transaction(b.serialize()))
    b_child = spend(
        [(OutPoint(b.txid, 0), b.outputs[0])], [TxOut(b.outputs[0].value - 1000, OTHER)]
    )
    run(node.send_raw_transaction(b_child.serialize()))
    # The block mines `a` and a rival of `b`: b and its child must leave the mempool.
    rival = spend([(op2, out2)], [TxOut(out2.value - 3000, OTHER)])
    fees = 1000 + 3000
    block = node.chain.build_block([TxOut(50 * COIN + fees, OTHER)], [a, rival])
    assert run(node.submit_block(block.serialize())) is None
    assert run(node.tip()).block_hash == block.hash
    assert node.mempool.entries == {}
    assert run(node.mempool_txs([a.wtxid, b.wtxid, b_child.wtxid])) == [None, None, None]
    utxo = run(node.get_utxo(a.txid, 0))
    assert utxo is not None and (utxo.height, utxo.confirmations, utxo.is_coinbase) == (
        102,
        1,
        False,
    )
    assert run(node.get_utxo(op.txid, 0)) is None  # spent
    assert run(node.submit_block(block.serialize())) == "duplicate"
    assert run(node.get_block(block.hash)) == block.serialize()
    assert run(node.block_height(block.hash)) == 102


def test_submit_block_from_template_and_rejections(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    tx = spend([(op, out)], [TxOut(out.value - 1234, OTHER)])
    run(node.send_raw_transaction(tx.serialize()))
    greedy = block_from_template(node, OTHER, value_delta=1)
    assert run(node.submit_block(greedy.serialize())) == "bad-cb-amount"
    assert run(node.tip()).height == 101 and len(node.mempool.entries) == 1
    assert run(node.submit_block(b"\x00" * 10)) == "Block decode failed"
    good = block_from_template(node, OTHER)
    assert run(node.submit_block(good.serialize())) is None
    assert good.txs[0].outputs[0].value == 50 * COIN + 1234
    assert node.mempool.entries == {}


def test_generate_mines_mempool_and_pays_fees(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    tx = spend([(op, out)], [TxOut(out.value - 777, OTHER)])
    run(node.send_raw_transaction(tx.serialize()))
    (h,) = run(node.generate_to_script(1, OTHER))
    block = Block.parse(run(node.get_block(h)) or b"")
    assert block.txs[1] == tx and block.txs[0].outputs[0] == TxOut(50 * COIN + 777, OTHER)
    assert run(node.block_height(h)) == 102


def test_package_accept_and_all_or_nothing_submit(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    parent = spend([(op, out)], [TxOut(out.value, P2TR)])  # 0 fee: the child pays
    child = spend(
        [(OutPoint(parent.txid, 0), parent.outputs[0])],
        [TxOut(parent.outputs[0].value - 3000, OTHER)],
    )
    res = run(node.test_mempool_accept([parent.serialize(), child.serialize()]))
    assert [(r.allowed, r.fee) for r in res] == [(True, 0), (True, 3000)]
    assert node.mempool.entries == {}  # testmempoolaccept keeps nothing
    bad_child = spend(
        [(OutPoint(parent.txid, 0), parent.outputs[0])], [TxOut(parent.outputs[0].value + 1, OTHER)]
    )
    with pytest.raises(NodeError, match="bad-txns-in-belowout"):
        run(node.submit_package([parent.serialize(), bad_child.serialize()]))
    assert node.mempool.entries == {}  # the parent did not stay behind
    assert run(node.submit_package([parent.serialize(), child.serialize()])) == [
        parent.txid,
        child.txid,
    ]
    assert list(node.mempool.entries) == [parent.txid, child.txid]


def test_reorg_by_more_work_returns_txs_to_mempool(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    tx = spend([(op, out)], [TxOut(out.value - 1000, OTHER)])
    run(node.send_raw_transaction(tx.serialize()))
    (mined,) = run(node.generate(1, OTHER))
    assert node.mempool.entries == {}
    fork_parent = run(node.block_hash(101))
    assert fork_parent is not None
    f1 = node.build_block_on(fork_parent, P2TR)
    assert run(node.submit_block(f1.serialize())) == "inconclusive"  # equal work: stays
    assert run(node.tip()).block_hash == mined
    f2 = node.build_block_on(f1.hash, P2TR)
    assert run(node.submit_block(f2.serialize())) is None  # more work: reorg
    assert run(node.tip()).block_hash == f2.hash
    assert run(node.block_height(mined)) is None  # the lifecycle sees it orphaned
    assert run(node.get_utxo(tx.txid, 0)) is None
    assert run(node.mempool_txs([tx.wtxid])) == [tx]  # back in the mempool, as in Core
    assert run(node.get_utxo(op.txid, 0)) is not None


def test_invalidate_and_reconsider(node: KernelNode) -> None:
    op, out = coinbase_outpoint(node, 1)
    tx = spend([(op, out)], [TxOut(out.value - 1000, OTHER)])
    run(node.send_raw_transaction(tx.serialize()))
    h102, h103 = run(node.generate(2, OTHER))
    run(node.invalidate_block(h102))
    assert run(node.tip()).height == 101
    assert run(node.block_height(h102)) is None and run(node.block_height(h103)) is None
    assert run(node.mempool_txs([tx.wtxid])) == [tx]
    assert run(node.submit_block(run(node.get_block(h103)) or b"")) == "duplicate-invalid"
    run(node.reconsider_block(h102))
    assert run(node.tip()).block_hash == h103
    assert node.mempool.entries == {}
    with pytest.raises(NodeError, match="Block not found"):
        run(node.invalidate_block(b"\x42" * 32))
