"""The settlement lifecycle against a real bitcoind regtest node (issue #5, marker ``bitcoind``).

Blocks are mined as the JD client does (our coinbase around ``getblocktemplate``, accepted
through ``submitblock``); then :class:`SettlementLifecycle` over :class:`BitcoindNode` walks
them found → confirmed → mature (Core's own maturity boundary, checked on both sides) → paid:

- ``coinbase``: every miner's output is in the UTXO set with its exact amount after maturity;
- ``musig2``: the key-path spend is accepted and mined; with a lazy signer the timelocked
  fallback is refused by the node one block early (BIP-68, ``non-BIP68-final``), then accepted
  and mined;
- reorgs with ``invalidateblock``/``reconsiderblock``: the ledger after a rollback equals the
  ledger before the block exactly, a returning block is re-recorded once, and a restarted
  lifecycle (new object, same store) resumes without a second payment or a second spend.

One node per module (the ``chain`` fixture); each test gets its own store and its own payees.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from payouts.node.interface import NodeError
from payouts.settlement.lifecycle import SettlementLifecycle
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_settlements, load_txs
from payouts.settlement.modes import Musig2Mode, SettlementMode
from payouts.settlement.musig2.output import Musig2Output, choose_committee
from payouts.settlement.musig2.session import SessionState, SigningSession
from payouts.settlement.musig2.spend import FallbackSpend, sign_fallback_spend
from payouts.store import repositories as repo
from payouts.store.ledger import (
    LedgerCredit,
    append_ledger_entries,
    export_ledger,
    get_block,
    ledger_balances,
    record_block,
)
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from tests.lifecycle.test_reorgs import Recorder
from tests.musig2_settlement.helpers import FALLBACK_SK, FALLBACK_XONLY, World, run_session
from tests.node.regtest_chain import BURN, Chain, Mined, distribution, p2tr

pytestmark = pytest.mark.bitcoind

# Above COINBASE_MATURITY: at maturity the fallback is still BIP-68 locked, so the test sees
# the node refuse it and the lifecycle wait.
FALLBACK_DELAY = 110
REMINE = p2tr("lifecycle: blocks mined after an invalidateblock", 0)


def _status(engine: Engine, block_id: int) -> str:
    b = get_block(engine, block_id)
    assert b is not None
    return b.status


def _record(engine: Engine, mined: Mined, credits: list[LedgerCredit] | None = None) -> int:
    rec = record_block(
        engine,
        height=mined.height,
        block_hash=mined.hash,
        revenue=mined.revenue,
        credits=credits or [],
    )
    return rec.id


# -- coinbase -------------------------------------------------------------------------------------


def test_coinbase_mode_pays_each_miner_exactly_after_maturity(chain: Chain, engine: Engine) -> None:
    dist = distribution("coinbase-mode", 9)
    mined = chain.mine_payout_block(dist, SettlementMode())
    payout = mined.coinbase.payout
    assert payout is not None
    cb = mined.coinbase_tx
    # Nothing left unclaimed: the coinbase distributes exactly T, payouts first.
    assert sum(o.value for o in cb.outputs) == mined.revenue == payout.total
    assert cb.outputs[: len(payout.outputs)] == payout.outputs
    block_id = _record(engine, mined)
    lc = SettlementLifecycle(engine, chain.node)
    assert lc.track_coinbase(block_id) is True
    assert chain.step(lc) == ["confirmed"]
    # 99 confirmations: Core still calls a coinbase spend premature, and so does the lifecycle.
    chain.mine_to(first_mature_tip(mined.height) - 1)
    probe = Tx(2, (TxIn(OutPoint(cb.txid, 0)),), (TxOut(cb.outputs[0].value - 10_000, BURN),))
    [early] = chain.run(chain.node.test_mempool_accept([probe.serialize()]))
    assert (early.reason or "").startswith("bad-txns-premature-spend-of-coinbase")
    assert chain.step(lc) == []
    assert _status(engine, block_id) == "confirmed"
    chain.mine(1)
    # 100 confirmations: the node now gets past maturity (and fails the unsigned probe's
    # script instead); the lifecycle says mature and, in coinbase mode, paid.
    [late] = chain.run(chain.node.test_mempool_accept([probe.serialize()]))
    assert late.reason is not None and "script-verify-flag-failed" in late.reason
    assert chain.step(lc) == ["mature", "paid"]
    assert _status(engine, block_id) == "paid"
    chain.assert_landed(cb.txid, payout.outputs)
    # Each miner's output holds the amount the accounting computed for it.
    found = chain.scan(p.script for p in dist.payouts)
    paid = {script: sat for (txid, _), (sat, script) in found.items() if txid == cb.txid}
    want = {p.script: a for p, a in zip(dist.payouts, payout.payee_amounts, strict=True) if a}
    assert paid == want and len(want) >= 8
    chain.mine(2)
    assert chain.step(lc) == []
    assert chain.step(SettlementLifecycle(engine, chain.node)) == []  # a restart: nothing to do


# -- musig2 ---------------------------------------------------------------------------------------


def _musig2_block(chain: Chain, engine: Engine) -> tuple[int, Mined, Musig2Output, World]:
    w = World(n_keyed=4, n_plain=2)
    committee = choose_committee(w.distribution, w.registered)
    mode = SettlementMode(
        "musig2",
        musig2=Musig2Mode(committee.pubkeys, FALLBACK_DELAY, FALLBACK_XONLY, fee_rate=2),
    )
    mined = chain.mine_payout_block(w.distribution, mode)
    assert mode.musig2 is not None
    out = mode.musig2.build(w.distribution, mined.revenue)
    assert mined.coinbase_tx.outputs[0] == out.txout  # the JD client's coinbase carries it
    return _record(engine, mined), mined, out, w


def _fallback_signer(o: Musig2Output, spend: FallbackSpend, session: SigningSession) -> Tx:
    return sign_fallback_spend(o, spend, FALLBACK_SK, session=session)


def test_musig2_key_path_spend_accepted_and_mined(chain: Chain, engine: Engine) -> None:
    block_id, mined, out, w = _musig2_block(chain, engine)
    lc = SettlementLifecycle(engine, chain.node)
    lc.track_musig2(block_id, out)
    chain.mine_to(first_mature_tip(mined.height) - 1)
    assert chain.step(lc, 1.0) == ["confirmed"]
    assert lc.session(block_id) is None  # no session before the coinbase can be spent
    chain.mine(1)
    assert chain.step(lc, 10.0) == ["mature", "bound", "signing-started"]
    session = lc.session(block_id)
    assert session is not None
    run_session(session, w.sks, now=11.0)
    assert session.state is SessionState.COMPLETE
    assert chain.step(lc, 12.0) == ["broadcast"]
    (row,) = load_txs(engine, block_id)
    tx = Tx.parse(row.raw)
    funding = OutPoint(mined.coinbase_tx.txid, 0)
    assert row.role == "cooperative" and tx.txid == out.payout_tx_for(funding).txid
    assert len(tx.inputs[0].witness) == 1  # key path: one BIP-340 signature
    assert chain.run(chain.node.mempool_txs([tx.wtxid])) == [tx]  # bitcoind took it
    assert chain.step(lc, 13.0) == []  # re-sent: already in the mempool is fine
    chain.mine(1)
    assert chain.step(lc, 14.0) == ["tx-confirmed", "paid"]
    assert tx.outputs == out.payout_tx.outputs
    chain.assert_landed(tx.txid, tx.outputs)
    assert chain.run(chain.node.get_utxo(funding.txid, funding.n)) is None  # spent


def test_musig2_timeout_fallback_accepted_after_bip68(chain: Chain, engine: Engine) -> None:
    block_id, mined, out, w = _musig2_block(chain, engine)
    h = mined.height
    lc = SettlementLifecycle(engine, chain.node, fallback_signer=_fallback_signer)
    lc.track_musig2(block_id, out)
    chain.mine_to(first_mature_tip(h))
    assert chain.step(lc, 0.0) == ["confirmed", "mature", "bound", "signing-started"]
    session = lc.session(block_id)
    assert session is not None
    run_session(session, w.sks, now=1.0, skip_nonce=frozenset({1}))  # one signer never shows
    assert chain.step(lc, 30.0) == []  # before the nonce deadline: wait
    assert chain.step(lc, 1_000.0) == ["signing-failed"]
    (row,) = load_txs(engine, block_id)
    assert row.role == "fallback" and row.status == "planned"
    tx = Tx.parse(row.raw)
    assert tx.inputs[0].sequence == FALLBACK_DELAY  # BIP-68 height lock
    chain.mine_to(h + FALLBACK_DELAY - 2)  # next block h + n - 1: one too early
    [early] = chain.run(chain.node.test_mempool_accept([row.raw]))
    assert early.reason == "non-BIP68-final"
    assert chain.step(lc, 1_001.0) == []  # the lifecycle does not try before the node allows
    chain.mine(1)
    [ok] = chain.run(chain.node.test_mempool_accept([row.raw]))
    assert ok.allowed, ok.reason
    assert chain.step(lc, 1_002.0) == ["broadcast"]
    chain.mine(1)
    assert chain.step(lc, 1_003.0) == ["tx-confirmed", "paid"]
    assert _status(engine, block_id) == "paid"
    chain.assert_landed(tx.txid, tx.outputs)


# -- reorgs and restarts --------------------------------------------------------------------------


def test_reorg_rolls_the_ledger_back_exactly_and_restart_pays_once(
    chain: Chain, engine: Engine
) -> None:
    alice = repo.register_miner(engine, "alice", bytes.fromhex("0014" + "a1" * 20)).id
    bob = repo.register_miner(engine, "bob", bytes.fromhex("0014" + "b2" * 20)).id
    append_ledger_entries(engine, [LedgerCredit(alice, 5_000, "owed")])  # history before
    before_lines = export_ledger(engine)
    before = ledger_balances(engine)
    dist = distribution("reorg-coinbase", 5)
    mined = chain.mine_payout_block(dist, SettlementMode())
    credits = [LedgerCredit(alice, 700, "owed"), LedgerCredit(bob, 1_300, "owed")]
    block_id = _record(engine, mined, credits)
    with_block = ledger_balances(engine)
    assert with_block == {alice: 5_700, bob: 1_300}
    listener = Recorder()
    lc = SettlementLifecycle(engine, chain.node, listener=listener)
    lc.track_coinbase(block_id)
    chain.mine(3)
    assert chain.step(lc) == ["confirmed"]

    chain.run(chain.node.invalidate_block(mined.hash))
    assert chain.tip() == mined.height - 1
    assert chain.step(lc) == ["orphaned"]
    assert _status(engine, block_id) == "orphaned"
    assert load_settlements(engine)[block_id].phase == "rolled-back"
    # Exactly the ledger before the block: balances, every earlier line untouched, and the
    # block's own lines netting to zero per miner.
    assert ledger_balances(engine) == {**before, bob: 0}
    lines = export_ledger(engine)
    assert [x for x in lines if x["block_id"] != block_id] == before_lines
    net: dict[int, int] = {}
    for x in lines:
        if x["block_id"] == block_id:
            net[x["miner_id"]] = net.get(x["miner_id"], 0) + x["amount"]
    assert net == {alice: 0, bob: 0}
    assert chain.run(chain.node.get_utxo(mined.coinbase_tx.txid, 0)) is None
    assert chain.step(lc) == []

    # A shorter branch meanwhile, then the block comes back and wins (4 blocks against 2).
    chain.mine(2)
    assert chain.step(lc) == []
    chain.run(chain.node.reconsider_block(mined.hash))
    assert chain.run(chain.node.block_hash(mined.height)) == mined.hash
    assert chain.step(lc) == ["returned"]
    assert _status(engine, block_id) == "found"
    assert ledger_balances(engine) == with_block  # re-recorded exactly once

    # Restart: a new lifecycle on the same store finishes the job; the old one has nothing
    # left, and the block is paid exactly once.
    del lc
    lc2 = SettlementLifecycle(engine, chain.node, listener=listener)
    chain.mine_to(first_mature_tip(mined.height))
    assert chain.step(lc2) == ["confirmed", "mature", "paid"]
    assert chain.step(lc2) == []
    assert chain.step(SettlementLifecycle(engine, chain.node, listener=listener)) == []
    assert listener.calls == [("orphaned", block_id), ("returned", block_id), ("paid", block_id)]
    assert ledger_balances(engine) == with_block
    payout = mined.coinbase.payout
    assert payout is not None
    chain.assert_landed(mined.coinbase_tx.txid, payout.outputs)


def test_musig2_reorgs_of_the_payout_and_of_the_block_never_pay_twice(
    chain: Chain, engine: Engine
) -> None:
    block_id, mined, out, w = _musig2_block(chain, engine)
    lc = SettlementLifecycle(engine, chain.node)
    lc.track_musig2(block_id, out)
    chain.mine_to(first_mature_tip(mined.height))
    chain.step(lc, 0.0)
    session = lc.session(block_id)
    assert session is not None
    run_session(session, w.sks, now=1.0)
    assert chain.step(lc, 2.0) == ["broadcast"]
    (payout_block,) = chain.mine(1)
    assert chain.step(lc, 3.0) == ["tx-confirmed", "paid"]
    (row,) = load_txs(engine, block_id)
    tx = Tx.parse(row.raw)

    # Only the block holding the payout leaves: bitcoind puts the tx back in its mempool; the
    # lifecycle marks it unconfirmed, re-sends the same bytes, and sees it confirm again.
    chain.run(chain.node.invalidate_block(payout_block))
    assert chain.step(lc, 4.0) == ["tx-unconfirmed"]
    assert chain.run(chain.node.mempool_txs([tx.wtxid])) == [tx]
    # Another coinbase script: the same parent, txs and script could rebuild the very block
    # that was invalidated ("duplicate-invalid").
    chain.mine(1, script=REMINE)
    assert chain.step(lc, 5.0) == ["tx-confirmed"]
    assert _status(engine, block_id) == "paid"

    # Restart (no musig2 output in memory, no resolver): nothing to sign, nothing to send; the
    # stored session is the completed one.
    lc2 = SettlementLifecycle(engine, chain.node)
    assert chain.step(lc2, 6.0) == []
    resumed = lc2.session(block_id)
    assert resumed is not None and resumed.state is SessionState.COMPLETE

    # The coinbase block itself leaves (100+ blocks deep): orphaned, spend forgotten; the
    # node drops the spend of the vanished coinbase.
    chain.run(chain.node.invalidate_block(mined.hash))
    assert chain.step(lc2, 7.0) == ["orphaned"]
    assert lc2.session(block_id) is None  # gone with its block (its sighash named the coinbase)
    (row,) = load_txs(engine, block_id)
    assert row.status == "planned" and row.confirmed_block is None
    assert chain.run(chain.node.mempool_txs([tx.wtxid])) == [None]
    with pytest.raises(NodeError, match="missingorspent"):
        chain.run(chain.node.send_raw_transaction(row.raw))

    # It comes back with the chain that confirmed the spend: found confirmed again, paid once.
    chain.run(chain.node.reconsider_block(mined.hash))
    assert chain.step(lc2, 8.0) == ["returned"]
    assert chain.step(lc2, 9.0) == ["confirmed", "mature", "tx-confirmed", "paid"]
    assert chain.step(lc2, 10.0) == []
    rows = load_txs(engine, block_id)
    assert [(r.role, r.txid, r.status) for r in rows] == [("cooperative", tx.txid, "confirmed")]
    chain.assert_landed(tx.txid, tx.outputs)
