"""CTV settlement on a real node (issue #5, marker ``bitcoind``).

Bitcoin Core does not enforce BIP-119, so the engine refuses CTV settlement there with
``ctv-not-active`` (ARCHITECTURE invariant 4: a ``<32B> OP_NOP4`` output is anyone-can-spend).
On a Bitcoin Inquisition build in ``$BITCOIND`` (``getdeploymentinfo`` lists
``checktemplateverify`` active) the tests below run end to end:

- the fan-out tree broadcast by :class:`SettlementLifecycle` (0-fee TRUC txs, each CPFP'd from
  the pool's fee wallet through its P2A anchor with ``submitpackage``) confirms level by level
  and every payee's output is in the UTXO set with its exact amount;
- a tampered fan-out tx (an amount changed, an output redirected) is rejected by the node's
  CTV check, while the honest tx is accepted;
- a third party, whose key the pool does not hold, CPFPs a 0-fee fan-out tx through its anchor
  and the package is accepted and mined.

The relay mechanics those 0-fee trees rely on (a 0-fee TRUC tx with a 0-value P2A anchor,
refused alone, accepted in a package with a stranger's child) are checked on any node, with a
parent that spends a plain key-path coin instead of a CTV output.

Without such a binary each CTV test skips, saying so, after the part that needs no CTV node
(building the tree from the node's template, funding the fee keys, the offline tamper checks).
The 0-fee trees rely on Core's ephemeral-dust policy (a 0-value anchor relayed in a package
with the child that spends it, Core >= 29), so the Inquisition build must carry it.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine

from payouts.distribution.model import Distribution
from payouts.node.interface import NodeError
from payouts.node.rpc import btc_to_sats
from payouts.settlement.ctv import (
    P2A_SCRIPT,
    CtvFanout,
    CtvNotActiveError,
    CtvParams,
    build_ctv_fanout,
    ctv_settlement,
)
from payouts.settlement.lifecycle import SettlementLifecycle
from payouts.settlement.lifecycle_fees import FeeUtxo, FeeWallet, build_cpfp_child
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_txs
from payouts.settlement.modes import SettlementMode
from payouts.store.ledger import get_block, record_block
from payouts.tx.ctv import standard_template_hash
from payouts.tx.hashes import sha256
from payouts.tx.transaction import SEQUENCE_FINAL, OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.jds import JobDeclarationServer
from sv2.noise import ServerIdentity
from tests.node.regtest_chain import Chain, Mined, distribution, p2tr

pytestmark = pytest.mark.bitcoind

POOL_FEE_SK = sha256(b"tests/node ctv: the pool's fee wallet")
THIRD_PARTY_SK = sha256(b"tests/node ctv: somebody else entirely")
THIEF = p2tr("ctv thief", 0)
# A CTV failure as Inquisition words it (ScriptErrorString(SCRIPT_ERR_TEMPLATE_MISMATCH)), inside
# the reject reason Core's mempool gives a script failure: "non-mandatory-script-verify-flag (…)"
# or "mandatory-script-verify-flag-failed (…)" up to Core 29 (what v28.1-inq says: the CTV flag
# is not among the mandatory ones), "mempool-script-verify-flag-failed (…)" or
# "block-script-verify-flag-failed (…)" from Core 30 on.
CTV_FAILURE = re.compile(
    r"\b(?:non-mandatory|mandatory|mempool|block)-script-verify-flag(?:-failed)? "
    r"\(Script failed an OP_CHECKTEMPLATEVERIFY operation\)"
)


def ctv_active(chain: Chain) -> bool:
    return chain.run(chain.node.deployment_active("checktemplateverify"))


def require_ctv(chain: Chain) -> None:
    if not ctv_active(chain):
        pytest.skip(
            "needs a Bitcoin Inquisition build in $BITCOIND: "
            f"{chain.regtest.bitcoind} ({chain.regtest.version}) does not report "
            "checktemplateverify active in getdeploymentinfo, so it would not enforce CTV"
        )


def preview(chain: Chain, dist: Distribution, params: CtvParams) -> CtvFanout:
    """The tree for the node's current template revenue, built offline (no activation check:
    nothing is mined or sent from it)."""
    revenue = chain.run(chain.node.block_template()).coinbase_value
    return build_ctv_fanout(dist, revenue, params)


def mine_ctv_block(chain: Chain, dist: Distribution, params: CtvParams) -> tuple[Mined, CtvFanout]:
    """The block with the commitment output, and its tree bound to that coinbase outpoint.
    The tree comes from the engine's gate, fed with the node's own deployment answer."""
    mined = chain.mine_payout_block(dist, SettlementMode("ctv", params))
    fanout = ctv_settlement(dist, mined.revenue, params, ctv_active=ctv_active(chain))
    assert mined.coinbase_tx.outputs[0] == fanout.commitment_output
    return mined, fanout.bind(OutPoint(mined.coinbase_tx.txid, 0))


def fund_wallet(chain: Chain, seckey: bytes, n: int) -> FeeWallet:
    wallet = FeeWallet(seckey)
    for _ in range(n):
        op, value = chain.fund(wallet.script)
        wallet.add([FeeUtxo(op, value)])
    return wallet


def assert_every_exit_landed(chain: Chain, fanout: CtvFanout) -> None:
    """Each payee's (and the pool's) leaf output, by gettxout and scantxoutset."""
    leaves: dict[int, list[int]] = {}
    for e in fanout.exits:
        leaves.setdefault(e.path[-1], []).append(e.vout)
        assert fanout.txs[e.path[-1]].tx.outputs[e.vout] == e.output
    assert sum(len(v) for v in leaves.values()) == len(fanout.exits)
    for i, vouts in leaves.items():
        tx = fanout.txs[i].tx
        chain.assert_landed(tx.txid, tx.outputs, vouts)


# -- Bitcoin Core: refused ------------------------------------------------------------------------


def test_ctv_settlement_follows_the_nodes_deployment_info(chain: Chain) -> None:
    """Core: ``ctv-not-active``, nothing built; Inquisition: the tree is built."""
    dist = distribution("ctv-gate", 4)
    revenue = chain.run(chain.node.block_template()).coinbase_value
    active = ctv_active(chain)
    assert active is chain.regtest.is_inquisition
    if active:
        assert ctv_settlement(dist, revenue, ctv_active=active).txs
        return
    with pytest.raises(CtvNotActiveError) as e:
        ctv_settlement(dist, revenue, ctv_active=active)
    assert e.value.code == "ctv-not-active"
    assert "not active" in str(e.value) and "anyone-can-spend" in str(e.value)


def test_jds_in_ctv_mode_refuses_a_node_without_bip119(chain: Chain) -> None:
    if chain.regtest.is_inquisition:
        pytest.skip("this node enforces CTV: a ctv-mode JDS is legitimate on it")
    server = JobDeclarationServer(
        identity=ServerIdentity.signed_by(sha256(b"tests/node ctv: authority"), validity_s=600),
        node=chain.node,
        distribution_source=distribution("jds-ctv", 3),
        mode=SettlementMode("ctv", CtvParams(arity=4)),
    )

    async def main() -> None:
        try:
            with pytest.raises(CtvNotActiveError):
                await server.start()
        finally:
            await server.stop()

    chain.run(main())


def test_anchor_cpfp_package_relays_on_core(chain: Chain) -> None:
    """The relay mechanics the 0-fee fan-out relies on, checked on this node whatever it is: a
    0-fee TRUC tx with a 0-value P2A anchor (here spending a plain key-path coin, not a CTV
    output) is refused alone and accepted in a package with a third party's child built by
    :func:`build_cpfp_child` (Core: TRUC, ephemeral dust, package relay)."""
    owner = fund_wallet(chain, sha256(b"tests/node ctv: a zero-fee parent's key"), 1)
    stranger = fund_wallet(chain, THIRD_PARTY_SK, 1)
    chain.mine(100)
    (coin,) = owner.coins
    unsigned = Tx(
        3,
        (TxIn(coin.outpoint, b"", SEQUENCE_FINAL),),
        (TxOut(coin.value, p2tr("anchor-cpfp payee", 0)), TxOut(0, P2A_SCRIPT)),
        0,
    )
    parent = owner.sign(unsigned, 0, [TxOut(coin.value, owner.script)])
    [alone] = chain.run(chain.node.test_mempool_accept([parent.serialize()]))
    assert not alone.allowed and alone.reason == "min relay fee not met"  # pays nothing
    child, used, fee = build_cpfp_child(parent, 0, stranger, fee_rate=2)
    assert used in stranger.coins and fee == 2 * (parent.vsize + child.vsize)
    txids = chain.run(chain.node.submit_package([parent.serialize(), child.serialize()]))
    assert txids == [parent.txid, child.txid]
    entry = chain.run(chain.node.get_mempool_entry(child.txid))
    assert entry is not None and btc_to_sats(entry["fees"]["base"]) == fee
    chain.mine(1)
    chain.assert_landed(parent.txid, parent.outputs)  # the payee's output; the anchor is spent
    chain.assert_landed(child.txid, child.outputs)
    assert chain.run(chain.node.get_utxo(parent.txid, 1)) is None


# -- Bitcoin Inquisition: enforced ----------------------------------------------------------------


def test_lifecycle_fanout_confirms_and_pays_everyone(chain: Chain, engine: Engine) -> None:
    params = CtvParams(arity=4)  # fee_rate 0: TRUC v3, 0-value anchors, the pool CPFPs
    dist = distribution("ctv-lifecycle", 12)
    tree = preview(chain, dist, params)
    assert tree.depth == 2 and tree.version == 3 and tree.anchor_value == 0
    assert sum(t.fee for t in tree.txs) == 0
    wallet = fund_wallet(chain, POOL_FEE_SK, len(tree.txs))  # matures before the CTV block
    require_ctv(chain)

    mined, fanout = mine_ctv_block(chain, dist, params)
    h = mined.height
    rec = record_block(engine, height=h, block_hash=mined.hash, revenue=mined.revenue)
    lc = SettlementLifecycle(engine, chain.node, fee_wallet=wallet)
    assert lc.track_ctv(rec.id, fanout) is True
    chain.mine_to(first_mature_tip(h) - 1)
    assert chain.step(lc) == ["confirmed"]
    chain.mine(1)
    assert chain.step(lc) == ["mature", "bound", "broadcast"]  # the root + its CPFP child
    # Restart mid-broadcast: a new process, a wallet object with the same coins.
    del lc
    lc2 = SettlementLifecycle(engine, chain.node, fee_wallet=FeeWallet(POOL_FEE_SK, wallet.coins))
    assert chain.step(lc2) == []  # re-sends the same package only
    for _ in range(fanout.depth + 1):
        chain.mine(1)
        if "paid" in chain.step(lc2):
            break
    b = get_block(engine, rec.id)
    assert b is not None and b.status == "paid"
    rows = load_txs(engine, rec.id)
    fan = sorted((r for r in rows if r.role == "fanout"), key=lambda r: r.seq)
    assert [r.txid for r in fan] == [t.tx.txid for t in fanout.txs]
    assert all(r.status == "confirmed" for r in rows)
    by_seq = {r.seq: r.confirmed_height for r in fan}
    for i, t in enumerate(fanout.txs):  # level by level: a child confirms after its parent
        if t.parent is not None:
            assert (by_seq[i] or 0) > (by_seq[t.parent] or 0)
    assert len([r for r in rows if r.role == "cpfp"]) == len(fanout.txs)  # one each, no more
    assert_every_exit_landed(chain, fanout)


def test_tampered_fanout_is_rejected_by_the_node(chain: Chain) -> None:
    params = CtvParams(arity=4, fee_rate=2)  # pays its own fee: the honest root relays alone
    dist = distribution("ctv-tamper", 12)
    root = preview(chain, dist, params).txs[0]

    def tampered(tx: Tx) -> tuple[Tx, Tx]:
        outs = list(tx.outputs)
        cheaper = [TxOut(outs[0].value - 1_000, outs[0].script), *outs[1:]]
        stolen = [TxOut(outs[0].value, THIEF), *outs[1:]]
        return (
            Tx(tx.version, tx.inputs, tuple(cheaper), tx.locktime),
            Tx(tx.version, tx.inputs, tuple(stolen), tx.locktime),
        )

    # Offline: the committed hash matches the honest tx only.
    assert standard_template_hash(root.tx, 0) == root.template_hash
    for bad in tampered(root.tx):
        assert standard_template_hash(bad, 0) != root.template_hash
    require_ctv(chain)

    mined, fanout = mine_ctv_block(chain, dist, params)
    chain.mine_to(first_mature_tip(mined.height))
    honest = fanout.txs[0].tx
    for bad in tampered(honest):
        [res] = chain.run(chain.node.test_mempool_accept([bad.serialize()]))
        assert not res.allowed and res.reason is not None
        assert CTV_FAILURE.search(res.reason), res.reason
        with pytest.raises(NodeError) as e:
            chain.run(chain.node.send_raw_transaction(bad.serialize()))
        assert CTV_FAILURE.search(e.value.reason), e.value.reason
    [ok] = chain.run(chain.node.test_mempool_accept([honest.serialize()]))
    assert ok.allowed, ok.reason
    assert chain.run(chain.node.send_raw_transaction(honest.serialize())) == honest.txid
    chain.mine(1)
    chain.assert_landed(honest.txid, honest.outputs)


def test_third_party_cpfp_through_the_anchor(chain: Chain) -> None:
    params = CtvParams(arity=4)  # 0-fee TRUC root: it relays only with a child paying for it
    dist = distribution("ctv-third-party", 12)
    tree = preview(chain, dist, params)
    stranger = fund_wallet(chain, THIRD_PARTY_SK, 1)
    pool = FeeWallet(POOL_FEE_SK)
    # Not the pool's key, not a payee's script: anyone may bump the tree.
    assert stranger.script != pool.script
    assert stranger.script not in {p.script for p in dist.payouts}
    assert tree.txs[0].fee == 0 and tree.txs[0].tx.version == 3
    require_ctv(chain)

    mined, fanout = mine_ctv_block(chain, dist, params)
    chain.mine_to(first_mature_tip(mined.height))
    root = fanout.txs[0].tx
    root_fee = fanout.commitment_output.value - root.output_value()
    assert root_fee == 0
    [alone] = chain.run(chain.node.test_mempool_accept([root.serialize()]))
    assert not alone.allowed and alone.reason == "min relay fee not met"  # not on its own
    child, coin, child_fee = build_cpfp_child(root, root_fee, stranger, fee_rate=2)
    assert child.inputs[1].prevout == coin.outpoint and child.version == 3
    assert child_fee == 2 * (root.vsize + child.vsize)
    txids = chain.run(chain.node.submit_package([root.serialize(), child.serialize()]))
    assert txids == [root.txid, child.txid]
    assert chain.run(chain.node.mempool_txs([root.wtxid, child.wtxid])) == [root, child]
    chain.mine(1)
    chain.assert_landed(root.txid, root.outputs)  # the anchor (0 sat) is spent by the child
    chain.assert_landed(child.txid, child.outputs)
    assert child.outputs[0].script == stranger.script
