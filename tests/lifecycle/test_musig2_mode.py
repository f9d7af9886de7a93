"""MuSig2 mode on the kernel backend: at maturity the lifecycle opens the signing session
(signers reach it through ``lc.session``), broadcasts the key-path spend when it completes and
marks the block paid once it confirms; with a lazy signer the session fails and the signed
fallback goes out only when its BIP-68 lock allows. A restart never builds a second spend, and
a restart mid-session resumes the stored session: signers finish it through the new lifecycle."""

from __future__ import annotations

from sqlalchemy import Engine

from payouts.node.kernel import KernelNode
from payouts.settlement.lifecycle import SettlementLifecycle
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_txs
from payouts.settlement.musig2.output import Musig2Output, build_musig2_output
from payouts.settlement.musig2.session import SessionState, SigningSession
from payouts.settlement.musig2.spend import FallbackSpend, sign_fallback_spend
from payouts.store.ledger import get_block, record_block
from payouts.tx.transaction import Tx
from tests.lifecycle.helpers import build, mine, mine_to, run, step, submit, tip
from tests.musig2_settlement.helpers import FALLBACK_SK, World, params, run_session

DELAY = 144


def setup(engine: Engine, node: KernelNode) -> tuple[int, int, Musig2Output, World]:
    mine(node, 1)
    w = World(n_keyed=5, n_plain=2)
    h = tip(node) + 1
    out = build_musig2_output(
        w.distribution,
        node.chain.subsidy(h),
        w.registered,
        params(fallback_delay=DELAY, fee_rate=2),
        ctv_active=False,
    )
    block = build(node, out.coinbase_outputs)
    submit(node, block)
    rec = record_block(engine, height=h, block_hash=block.hash, revenue=node.chain.subsidy(h))
    return rec.id, h, out, w


def _paid_exactly(node: KernelNode, tx: Tx) -> None:
    for n, o in enumerate(tx.outputs):
        utxo = run(node.get_utxo(tx.txid, n))
        assert utxo is not None and (utxo.value, utxo.script) == (o.value, o.script)


def test_cooperative_spend_then_paid_and_restart_builds_nothing(
    engine: Engine, node: KernelNode
) -> None:
    block_id, h, out, w = setup(engine, node)
    lc = SettlementLifecycle(engine, node)
    lc.track_musig2(block_id, out)
    mine_to(node, first_mature_tip(h) - 1)
    assert step(lc) == ["confirmed"]
    assert lc.session(block_id) is None  # nothing before maturity
    mine(node, 1)
    assert step(lc, 10.0) == ["mature", "bound", "signing-started"]
    session = lc.session(block_id)
    assert session is not None
    run_session(session, w.sks, now=11.0)
    assert session.state is SessionState.COMPLETE
    assert step(lc, 12.0) == ["broadcast"]
    (row,) = load_txs(engine, block_id)
    funding = Tx.parse(row.raw).inputs[0].prevout
    assert row.role == "cooperative" and row.txid == out.payout_tx_for(funding).txid
    # Restart before it confirms: the same bytes are re-sent, no new session, no fallback;
    # the session read back from the store is the completed one.
    signature = session.final_signature()
    lc2 = SettlementLifecycle(engine, node)
    assert step(lc2, 13.0) == []
    resumed = lc2.session(block_id)
    assert resumed is not None and resumed.state is SessionState.COMPLETE
    assert resumed.final_signature() == signature and len(load_txs(engine, block_id)) == 1
    mine(node, 1)
    assert step(lc2, 14.0) == ["tx-confirmed", "paid"]
    assert get_block(engine, block_id).status == "paid"  # type: ignore[union-attr]
    _paid_exactly(node, Tx.parse(row.raw))


def test_lazy_signer_fallback_after_timelock(engine: Engine, node: KernelNode) -> None:
    block_id, h, out, w = setup(engine, node)

    def signer(o: Musig2Output, spend: FallbackSpend, session: SigningSession) -> Tx:
        return sign_fallback_spend(o, spend, FALLBACK_SK, session=session)

    lc = SettlementLifecycle(engine, node, fallback_signer=signer)
    lc.track_musig2(block_id, out)
    mine_to(node, first_mature_tip(h))
    step(lc, 0.0)
    session = lc.session(block_id)
    assert session is not None
    run_session(session, w.sks, now=1.0, skip_nonce=frozenset({2}))  # one lazy signer
    assert step(lc, 30.0) == []  # before the nonce deadline: wait
    assert step(lc, 1_000.0) == ["signing-failed"]  # persisted, but BIP-68 locked
    (row,) = load_txs(engine, block_id)
    assert row.role == "fallback" and row.status == "planned"
    mine_to(node, h + DELAY - 2)  # tip + 1 = h + n - 1: one block too early
    assert step(lc, 1_001.0) == []
    mine(node, 1)  # tip + 1 = h + n: allowed
    assert step(lc, 1_002.0) == ["broadcast"]
    mine(node, 1)
    assert step(lc, 1_003.0) == ["tx-confirmed", "paid"]
    _paid_exactly(node, Tx.parse(row.raw))


def test_restart_mid_session_resumes_it(engine: Engine, node: KernelNode) -> None:
    """Nonces in through one lifecycle, a new lifecycle (a restarted process, nothing in
    memory) resumes the same session from the store: the partial signatures complete it and
    the cooperative spend goes out once; a second lifecycle stepping too builds nothing more."""
    from payouts.crypto import musig2 as m

    block_id, h, out, w = setup(engine, node)
    lc = SettlementLifecycle(engine, node)
    lc.track_musig2(block_id, out)
    mine_to(node, first_mature_tip(h))
    assert step(lc, 10.0)[-1] == "signing-started"
    first = lc.session(block_id)
    assert first is not None
    secnonces = {}
    for i, pk in enumerate(first.pubkeys):
        sn, pn = m.nonce_gen(w.sks[pk], pk, first.keyagg, first.msg)
        secnonces[i] = sn
        first.add_nonce(i, pn, 11.0)
    deadlines = (first.nonce_deadline, first.sig_deadline)
    del lc, first
    # A restarted process knows the output through its resolver (the runner rebuilds it).
    lc2, lc3 = (SettlementLifecycle(engine, node, musig2_resolver=lambda _b: out)
                for _ in range(2))
    assert step(lc2, 12.0) == []  # no second session: the stored one is resumed
    resumed = lc2.session(block_id)
    assert resumed is not None and resumed.state is SessionState.COLLECTING_PARTIAL_SIGS
    assert (resumed.nonce_deadline, resumed.sig_deadline) == deadlines
    ctx = resumed.session_context
    for i, pk in enumerate(resumed.pubkeys):
        resumed.add_partial_sig(i, m.partial_sign(secnonces[i], w.sks[pk], ctx), 13.0)
    assert step(lc3, 14.0) == ["broadcast"]
    assert step(lc2, 15.0) == []  # the other one finds the spend there: not built twice
    (row,) = load_txs(engine, block_id)
    assert row.role == "cooperative" and row.status == "broadcast"
    mine(node, 1)
    assert step(lc2, 16.0) == ["tx-confirmed", "paid"]
    _paid_exactly(node, Tx.parse(row.raw))
