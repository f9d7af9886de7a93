"""The CTV fan-out validated by Bitcoin Core's consensus code (libbitcoinkernel, regtest).

libbitcoinkernel does NOT implement BIP-119: OP_CHECKTEMPLATEVERIFY is OP_NOP4 there, so the
kernel checks everything else (amounts, coinbase maturity, scripts, taproot control blocks,
block structure) and our own BIP-119 hash checks the commitments. CTV enforcement on a real
Bitcoin Inquisition node is the regtest integration suite's job.
"""

from __future__ import annotations

import pytest

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.kernel_chain import BlockRejectedError, KernelChain
from payouts.settlement.ctv import CtvFanout, CtvParams, build_ctv_fanout, commitment_matches
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut

MINER = bytes.fromhex("5120" + "ab" * 32)  # where the filler blocks' subsidies go


def p2tr(i: int) -> bytes:
    return b"\x51\x20" + i.to_bytes(32, "big")


def make_dist(n: int) -> Distribution:
    payees = []
    for i in range(n):
        # a mix of output types, so leaf sizes differ
        script = p2tr(i + 1) if i % 3 else bytes([0, 20]) + bytes([i % 256]) * 20
        if i % 7 == 3:
            script = bytes.fromhex("76a914") + bytes([i % 256]) * 20 + bytes.fromhex("88ac")
        payees.append(Payee(script, 1 + (i * 7) % 13, 546))
    return Distribution(1, PoolPayout(bytes.fromhex("0014" + "11" * 20), 10), tuple(payees))


def fund(chain: KernelChain, f: CtvFanout, maturity: int = 100) -> CtvFanout:
    """Mine the coinbase carrying the commitment, bind the tree to it, mine ``maturity``."""
    block = chain.mine_block(f.coinbase_outputs)
    coinbase = block.txs[0]
    assert coinbase.outputs[: len(f.coinbase_outputs)] == f.coinbase_outputs
    bound = f.bind(OutPoint(coinbase.txid, 0))
    chain.mine_empty(maturity, MINER)
    return bound


def mine_level(chain: KernelChain, txs: list[Tx]) -> None:
    reward = chain.subsidy(chain.tip_height + 1) + chain.fees(txs)
    height = chain.tip_height
    chain.mine_block([TxOut(reward, MINER)], txs)
    assert chain.tip_height == height + 1


@pytest.mark.parametrize(
    "params",
    [
        CtvParams(arity=4),  # 0-fee TRUC, 0-value ephemeral anchors
        CtvParams(arity=3, form="taproot", fee_rate=2),  # fee-paying, 240-sat anchors
        CtvParams(form="taproot"),  # flat
        CtvParams(arity=16, anchor=False, fee_rate=1, version=2),
    ],
    ids=["bare-k4-ephemeral", "taproot-k3-fee", "taproot-flat", "bare-k16-noanchor-v2"],
)
def test_kernel_accepts_the_tree_level_by_level(params: CtvParams) -> None:
    dist = make_dist(40)
    with KernelChain() as chain:
        revenue = chain.subsidy(1)
        f = fund(chain, build_ctv_fanout(dist, revenue, params))
        assert f.txs[0].value == revenue
        for level in range(f.depth):
            txs = [t.tx for t in f.txs if t.level == level]
            for t in f.txs:
                if t.level == level:
                    # our BIP-119 check of what the kernel cannot check
                    spent = chain.spent_outputs(t.tx)[0]
                    assert commitment_matches(spent.script, t.tx)
            assert all(chain.verify_spend(tx) for tx in txs)  # kernel script verification
            mine_level(chain, txs)
        # every payee (and the pool) holds its exact amount in the UTXO set
        assert len(f.payees) == 40
        for e in f.exits:
            op = OutPoint(f.txs[e.path[-1]].tx.txid, e.vout)
            out, _height, is_coinbase = chain.utxos[op]
            assert out == e.output and not is_coinbase
        assert sum(e.output.value for e in f.exits) + f.tree_cost == revenue


def test_overspending_fanout_tx_is_rejected() -> None:
    with KernelChain() as chain:
        f = fund(chain, build_ctv_fanout(make_dist(10), chain.subsidy(1), CtvParams(arity=4)))
        root = f.txs[0].tx
        outs = list(root.outputs)
        outs[0] = TxOut(outs[0].value + 1, outs[0].script)
        greedy = Tx(root.version, root.inputs, tuple(outs), root.locktime)
        tip = chain.tip_hash
        with pytest.raises(BlockRejectedError) as e:
            chain.mine_block([TxOut(chain.subsidy(chain.tip_height + 1), MINER)], [greedy])
        assert e.value.reason == "bad-txns-in-belowout"
        assert chain.tip_hash == tip
        mine_level(chain, [root])  # the honest root still goes in


def test_fanout_cannot_spend_an_immature_coinbase() -> None:
    """The coinbase-maturity caveat: the root is invalid until the coinbase has 100 confs."""
    with KernelChain() as chain:
        f = fund(chain, build_ctv_fanout(make_dist(5), chain.subsidy(1)), maturity=98)
        with pytest.raises(BlockRejectedError) as e:
            mine_level(chain, [f.txs[0].tx])  # block 100: 99 confirmations
        assert e.value.reason == "bad-txns-premature-spend-of-coinbase"
        mine_level(chain, [])
        mine_level(chain, [f.txs[0].tx])  # block 101: mature


def test_kernel_does_not_enforce_ctv_but_our_hash_does() -> None:
    """A child that redirects its outputs is consensus-valid to the kernel (OP_NOP4) yet
    fails the BIP-119 commitment: why CTV settlement needs a CTV-enforcing chain."""
    with KernelChain() as chain:
        f = fund(chain, build_ctv_fanout(make_dist(10), chain.subsidy(1), CtvParams(arity=4)))
        mine_level(chain, [f.txs[0].tx])
        child = f.txs[1].tx
        thief = Tx(child.version, child.inputs, (TxOut(child.output_value(), MINER),))
        spent = chain.spent_outputs(child)[0]
        assert commitment_matches(spent.script, child)
        assert not commitment_matches(spent.script, thief)
        mine_level(chain, [thief])  # accepted: the kernel treats OP_CTV as OP_NOP4
