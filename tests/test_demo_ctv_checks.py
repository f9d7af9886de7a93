"""The demo's CTV settlement checks (regtest/demo.py ``check_ctv_spends``,
``check_ctv_exits``) against a stand-in UTXO set: the state a node holds after the fan-out tree
was mined level by level passes; every way the tree could have gone wrong does not. On a
Bitcoin Inquisition node the same checks run for real (tests/node/test_demo_bitcoind.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from payouts.distribution.model import Distribution
from payouts.node.interface import Utxo
from payouts.settlement.ctv import CtvFanout, CtvParams, build_ctv_fanout
from payouts.tx.hashes import sha256
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut
from regtest.demo import check_ctv_exits, check_ctv_spends
from tests.node.regtest_chain import distribution

REVENUE = 50 * 100_000_000
THIEF = bytes.fromhex("0014") + sha256(b"tests/test_demo_ctv_checks: thief")[:20]


class UtxoSet:
    """Just ``Node.get_utxo``: the outputs of the mined tree that nothing spent."""

    def __init__(self, fan: CtvFanout) -> None:
        spent = {fan.funding} | {i.prevout for t in fan.txs for i in t.tx.inputs}
        self.utxos = {
            OutPoint(t.tx.txid, vout): out
            for t in fan.txs
            for vout, out in enumerate(t.tx.outputs)
            if OutPoint(t.tx.txid, vout) not in spent
        }

    async def get_utxo(self, txid: bytes, n: int) -> Utxo | None:
        out = self.utxos.get(OutPoint(txid, n))
        return None if out is None else Utxo(out.value, out.script, 103, False, 1)


def mined_tree() -> tuple[Distribution, CtvFanout]:
    dist = distribution("demo-ctv-checks", 12)
    fan = build_ctv_fanout(dist, REVENUE, CtvParams(arity=4, fee_rate=2))
    assert fan.depth == 2  # inner outputs exist: the case the old check got wrong
    return dist, fan.bind(OutPoint(sha256(b"a coinbase"), 0))


def check(node: UtxoSet, fan: CtvFanout, dist: Distribution) -> dict[bytes, tuple[int, int]]:
    async def both() -> dict[bytes, tuple[int, int]]:
        await check_ctv_spends(node, fan)  # type: ignore[arg-type]  # get_utxo is all they use
        return await check_ctv_exits(node, fan, dist)  # type: ignore[arg-type]

    return asyncio.run(both())


def test_a_tree_mined_level_by_level_passes() -> None:
    dist, fan = mined_tree()
    landed = check(UtxoSet(fan), fan, dist)
    assert len(landed) == 13  # 12 payees and the pool, each at its leaf with its amount
    assert landed[dist.pool_payout.script][1] == fan.payout.pool_amount
    for i, p in enumerate(dist.payouts):
        assert landed[p.script][1] == fan.payout.payee_amounts[i] > 0


def test_an_inner_output_left_unspent_fails() -> None:
    dist, fan = mined_tree()
    node = UtxoSet(fan)
    child = fan.txs[-1]
    assert child.parent is not None
    parent = fan.txs[child.parent]
    node.utxos[OutPoint(parent.tx.txid, child.parent_vout)] = parent.tx.outputs[child.parent_vout]
    with pytest.raises(AssertionError, match="still unspent"):
        check(node, fan, dist)


def test_a_missing_or_short_leaf_fails() -> None:
    dist, fan = mined_tree()
    leaf = fan.payees[3]
    at = OutPoint(fan.txs[leaf.path[-1]].tx.txid, leaf.vout)
    node = UtxoSet(fan)
    del node.utxos[at]
    with pytest.raises(AssertionError, match="is missing"):
        check(node, fan, dist)
    node = UtxoSet(fan)
    node.utxos[at] = TxOut(leaf.output.value - 1, leaf.output.script)
    with pytest.raises(AssertionError, match="differs"):
        check(node, fan, dist)


def test_a_child_that_is_not_its_committed_template_fails() -> None:
    dist, fan = mined_tree()
    i = len(fan.txs) - 1
    t = fan.txs[i]
    stolen = (TxOut(t.tx.outputs[0].value, THIEF), *t.tx.outputs[1:])
    txs = list(fan.txs)
    txs[i] = replace(t, tx=Tx(t.tx.version, t.tx.inputs, stolen, t.tx.locktime))
    bad = replace(fan, txs=tuple(txs))
    with pytest.raises(AssertionError, match="not its template"):
        check(UtxoSet(bad), bad, dist)


def test_a_tree_paying_other_amounts_than_the_distribution_fails() -> None:
    dist, fan = mined_tree()
    other = replace(dist, payouts=(dist.payouts[1], dist.payouts[0], *dist.payouts[2:]))
    with pytest.raises(AssertionError, match="is not the payout"):
        check(UtxoSet(fan), fan, other)
