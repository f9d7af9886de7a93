"""The JD server's sans-I/O session (sv2.jds.session.JdsSession) without a socket or an event
loop: messages go in, the session's node requests are answered from a libbitcoinkernel chain
(KernelChain, in process), and what it returns -- messages, CLOSE, FoundBlock -- is checked
message by message, with the node requests it made on the way."""

from __future__ import annotations

import pytest

from payouts.node.kernel_chain import KernelChain
from payouts.node.submit import Submitted
from payouts.settlement.modes import SettlementMode
from payouts.tx.transaction import Tx
from payouts.tx.txout import TxOut
from sv2 import messages as m
from sv2.declared_job import FoundBlock
from sv2.distribution_book import Published
from sv2.jds import errors as E
from sv2.jds.declaring import BoundOutputs
from sv2.jds.session import ExtensionState, JdsSession
from sv2.jds.steps import (
    NeedMempoolTxs,
    NeedTemplate,
    NeedTip,
    SubmitBlock,
    run_step,
)
from sv2.session import CLOSE, Disconnect
from tests.jds.helpers import (
    POOL_SCRIPT,
    SESSION_SETUP,
    Declaration,
    Rig,
    build_declaration,
    completed,
    fee_tx,
    make_distribution,
    rig,
    solve_push,
)

# -- SetupConnection ----------------------------------------------------------------------------


def test_setup_connection_success() -> None:
    with rig() as r:
        assert r.send(SESSION_SETUP) == [m.SetupConnectionSuccess(used_version=2, flags=0)]
        assert r.session.setup and r.requests == []
        with pytest.raises(Disconnect, match="second SetupConnection"):
            r.send(SESSION_SETUP)


@pytest.mark.parametrize(
    ("setup", "flags", "code"),
    [
        (m.SetupConnection(0, 2, 2, 1, "", 0, "", "", "", ""), 0, "unsupported-protocol"),
        (m.SetupConnection(1, 3, 4, 1, "", 0, "", "", "", ""), 0, "protocol-version-mismatch"),
        (
            m.SetupConnection(1, 2, 2, 0b101, "", 0, "", "", "", ""),
            0b100,
            "unsupported-feature-flags",
        ),
        (m.SetupConnection(1, 2, 2, 0, "", 0, "", "", "", ""), 0, "missing-declare-tx-data-flag"),
    ],
)
def test_setup_connection_refused_then_closed(
    setup: m.SetupConnection, flags: int, code: str
) -> None:
    with rig() as r:
        assert r.send(setup) == [m.SetupConnectionError(flags=flags, error_code=code), CLOSE]
        assert not r.session.setup
        assert r.session.stats == r.shared.stats == {f"setup-error:{code}": 1}


def test_messages_before_setup_or_from_the_wrong_role_disconnect() -> None:
    with rig() as r:
        with pytest.raises(Disconnect, match="AllocateMiningJobToken before SetupConnection"):
            r.send(m.AllocateMiningJobToken("miner", 1))
        r.set_up()
        with pytest.raises(Disconnect, match="not a message a JD client sends"):
            r.send(m.ProvideMissingTransactions(1, ()))


# -- RequestExtensions --------------------------------------------------------------------------


def test_extensions_supported_push_the_distribution_first() -> None:
    with rig() as r:
        r.send(SESSION_SETUP)
        out = r.send(m.RequestExtensions(9, (0x0003, 0x4003, 0x0003)))
        assert out[0] == m.RequestExtensionsSuccess(9, (0x0003, 0x4003))
        assert isinstance(out[1], m.SetPayoutDistribution) and out[1].distribution_id == 1
        assert isinstance(out[2], m.SetSettlementMode) and len(out) == 3
        assert r.session.ext_state is ExtensionState.DONE
        assert r.session.negotiated == {0x0003, 0x4003}
        with pytest.raises(Disconnect, match="negotiated twice"):
            r.send(m.RequestExtensions(10, (0x0003,)))
        # A new distribution is pushed to this client too.
        r.shared.book.publish(Published(make_distribution(2), None, SettlementMode(), 0, False))
        [spd, ssm] = r.session.distribution_update()
        assert isinstance(spd, m.SetPayoutDistribution) and spd.distribution_id == 2
        assert isinstance(ssm, m.SetSettlementMode) and ssm.distribution_id == 2


def test_extensions_unsupported_leave_the_base_protocol() -> None:
    with rig() as r:
        r.send(SESSION_SETUP)
        # 0x4003 without 0x0003 is not granted either: it refers to 0x0003 distributions.
        assert r.send(m.RequestExtensions(2, (0x7777, 0x4003))) == [
            m.RequestExtensionsError(2, (0x7777, 0x4003), ())
        ]
        assert r.session.ext_state is ExtensionState.DONE and r.session.negotiated == set()
        assert r.session.distribution_update() == []
        tok = r.one(m.AllocateMiningJobToken("miner", 3), m.AllocateMiningJobTokenSuccess)
        # Base spec: the pool payout output, value 0 (§6.4.3).
        assert tok.coinbase_tx_outputs == b"\x01" + TxOut(0, POOL_SCRIPT).serialize()


def test_required_extensions_get_one_retry_then_the_connection_ends() -> None:
    with rig(required=(0x0003,)) as r:
        r.send(SESSION_SETUP)
        assert r.send(m.RequestExtensions(1, (0x4002,))) == [
            m.RequestExtensionsError(1, (), (0x0003,))
        ]
        assert r.session.ext_state is ExtensionState.RETRY
        assert r.send(m.RequestExtensions(2, ())) == [
            m.RequestExtensionsError(2, (), (0x0003,)),
            CLOSE,
        ]
    with rig(required=(0x0003,)) as r:
        r.send(SESSION_SETUP)
        r.send(m.RequestExtensions(1, ()))
        with pytest.raises(Disconnect, match="without negotiating the required extensions"):
            r.send(m.AllocateMiningJobToken("miner", 1))
    with rig(required=(0x0003,)) as r:
        r.set_up((0x0003,))  # the retry that names them succeeds
        assert r.session.negotiated == {0x0003}


# -- AllocateMiningJobToken and DeclareMiningJob -------------------------------------------------


def test_allocate_token_under_0x0003_has_no_outputs() -> None:
    with rig() as r:
        r.set_up()
        tok = r.one(m.AllocateMiningJobToken("miner", 5), m.AllocateMiningJobTokenSuccess)
        assert tok.request_id == 5 and tok.coinbase_tx_outputs == b"\x00"
        rec = r.shared.tokens.get(tok.mining_job_token)
        assert rec is not None and rec.owner == 1 and rec.kind == "allocated"
        assert r.session.stats["tokens-allocated"] == 1
        r.session.closed()  # the connection's tokens go with it
        assert r.shared.tokens.get(tok.mining_job_token) is None


def _one_tx_job(r: Rig, fee: int) -> tuple[Tx, Declaration]:
    """A set-up session and a declaration of one transaction the server's node has."""
    tx = fee_tx(r.chain, 1, fee)
    r.node.add_mempool(tx)
    r.set_up()
    return tx, build_declaration(make_distribution(), r.chain, [tx], fees=fee)


def test_declaration_accepted_on_a_new_tip_loads_the_template_first() -> None:
    with rig() as r:
        tx, decl = _one_tx_job(r, 1_200)
        [ok] = r.declare(decl)
        assert isinstance(ok, m.DeclareMiningJobSuccess) and ok.request_id == 7
        tip = completed(r.node.tip())
        assert r.requests == [NeedTip(), NeedTemplate(tip)]  # every wtxid in the template
        job = r.session.latest_job
        assert job is not None and job.token == ok.new_mining_job_token
        assert job.revenue == decl.revenue and job.height == decl.height == 102
        assert job.mode == "coinbase" and job.distribution_id == 1
        assert [k.wtxid for k in job.txs] == [tx.wtxid]
        rec = r.shared.tokens.get(ok.new_mining_job_token)
        assert rec is not None and rec.kind == "declared" and rec.job is job
        assert r.session.stats["declare-accepted"] == r.shared.stats["declare-accepted"] == 1
        # On the same tip the loaded template serves the next declaration: no template load.
        r.declare(decl)
        assert r.requests == [NeedTip()]


def _tampered(decl: Declaration, chain: KernelChain) -> Declaration:
    """The same job with the first payee paid 1 sat less and the pool 1 sat more."""
    outs = list(decl.outputs[:-1])
    outs[0] = TxOut(outs[0].value + 1, outs[0].script)
    outs[1] = TxOut(outs[1].value - 1, outs[1].script)
    return build_declaration(make_distribution(), chain, payout_outputs=outs)


@pytest.mark.parametrize(
    "case",
    ["unknown-token", "no-tlv", "unknown-distribution", "tampered", "stale-tip", "node-down"],
)
def test_declaration_rejected_with_its_code(case: str) -> None:
    code = {
        "unknown-token": E.INVALID_TOKEN,
        "no-tlv": E.INVALID_PAYOUT_DISTRIBUTION,
        "unknown-distribution": E.INVALID_PAYOUT_DISTRIBUTION,
        "tampered": E.INVALID_PAYOUT_DISTRIBUTION,
        "stale-tip": E.STALE_CHAIN_TIP,
        "node-down": E.INTERNAL_ERROR,
    }[case]
    with rig() as r:
        r.set_up()
        decl = build_declaration(make_distribution(), r.chain)
        token = r.token()
        msg = decl.message(token)
        if case == "unknown-token":
            msg = decl.message(bytes(16))
        elif case == "no-tlv":
            msg = decl.message(token, dist_id=None)
        elif case == "unknown-distribution":
            msg = decl.message(token, dist_id=99)
        elif case == "tampered":
            msg = _tampered(decl, r.chain).message(token)
        elif case == "stale-tip":
            msg = build_declaration(make_distribution(), r.chain, height=101).message(token)
        else:
            r.fail.add(NeedTip)
        err = r.one(msg, m.DeclareMiningJobError)
        assert err.request_id == 7 and err.error_code == code, err
        assert r.session.stats[f"declare-rejected:{code}"] == 1
        assert r.session.latest_job is None and "declare-accepted" not in r.shared.stats


def test_missing_transactions_then_provided() -> None:
    with rig() as r:
        known, hidden = fee_tx(r.chain, 1, 1_500), fee_tx(r.chain, 2, 2_500)
        r.node.add_mempool(known)  # hidden: only the client has it
        r.set_up()
        decl = build_declaration(make_distribution(), r.chain, [known, hidden], fees=4_000)
        [pmt] = r.declare(decl)
        assert pmt == m.ProvideMissingTransactions(7, (1,))
        assert isinstance(r.requests[-1], NeedMempoolTxs)
        assert r.requests[-1].wtxids == (hidden.wtxid,)
        assert r.session.pending is not None and r.session.stats["missing-tx-requests"] == 1
        # An answer for another request is a late one: counted, nothing else.
        assert r.send(m.ProvideMissingTransactionsSuccess(6, (hidden.serialize(),))) == []
        assert r.session.stats["stale-provided-txs"] == 1 and r.session.pending is not None
        [ok] = r.send(m.ProvideMissingTransactionsSuccess(7, (hidden.serialize(),)))
        assert isinstance(ok, m.DeclareMiningJobSuccess) and r.requests == [NeedTip()]
        assert r.session.pending is None
        assert r.shared.txs.get(hidden.wtxid) is not None  # committed once validated
        job = r.session.latest_job
        assert job is not None and [k.wtxid for k in job.txs] == [known.wtxid, hidden.wtxid]


def test_provided_transactions_checked_and_a_newer_declaration_supersedes() -> None:
    with rig() as r:
        hidden = fee_tx(r.chain, 2, 2_500)
        r.set_up()
        decl = build_declaration(make_distribution(), r.chain, [hidden], fees=2_500)
        [pmt] = r.declare(decl)
        assert isinstance(pmt, m.ProvideMissingTransactions)
        other = fee_tx(r.chain, 3, 100)
        err = r.one(
            m.ProvideMissingTransactionsSuccess(7, (other.serialize(),)), m.DeclareMiningJobError
        )
        assert err.error_code == E.UNDECLARED_TX
        assert r.shared.txs.get(other.wtxid) is None  # nothing stored from a refused job
        # A second declaration while the first waits for its transactions supersedes it.
        r.declare(decl)
        out = r.send(build_declaration(make_distribution(), r.chain).message(r.token(), 8))
        assert isinstance(out[0], m.DeclareMiningJobError)
        assert (out[0].request_id, out[0].error_code) == (7, E.JOB_SUPERSEDED)
        assert isinstance(out[1], m.DeclareMiningJobSuccess) and out[1].request_id == 8


# -- PushSolution -------------------------------------------------------------------------------


def test_push_solution_submits_the_rebuilt_block_and_returns_the_found_block() -> None:
    with rig() as r:
        _, decl = _one_tx_job(r, 1_000)
        r.declare(decl)
        tip = completed(r.node.tip())
        wrong_tip = solve_push(decl, bytes(32), tip.time + 1)
        assert r.send(wrong_tip) == [] and r.session.stats["solution-mismatch"] == 1
        push = solve_push(decl, tip.block_hash, tip.time + 1)
        [found] = r.send(push)
        assert isinstance(found, FoundBlock)
        [req] = r.requests
        assert isinstance(req, SubmitBlock) and req.raw_block == found.raw_block
        assert r.chain.tip_hash == found.block_hash and found.height == 102
        assert found.job is r.session.latest_job and found.revenue == decl.revenue
        assert r.shared.found_blocks == [found]
        assert r.session.stats["blocks-found"] == 1


def test_push_solution_the_node_refuses_is_counted_not_found() -> None:
    with rig() as r:
        r.set_up()
        assert r.send(m.PushSolution(b"", bytes(32), 0, 0, 0, 0)) == []
        assert r.session.stats["solution-without-job"] == 1
        decl = build_declaration(make_distribution(), r.chain)
        r.declare(decl)
        tip = completed(r.node.tip())
        push = solve_push(decl, tip.block_hash, tip.time + 1)
        r.fail.add(SubmitBlock)
        assert r.send(push) == [] and isinstance(r.requests[-1], SubmitBlock)
        assert r.session.stats["blocks-rejected"] == 1 and r.shared.found_blocks == []


@pytest.mark.parametrize(("answer", "found"), [
    (Submitted("duplicate", in_active_chain=True), True),
    (Submitted("inconclusive", in_active_chain=True), True),
    (Submitted("duplicate", in_active_chain=False), False),
    (Submitted("inconclusive", in_active_chain=False), False),
    (Submitted("duplicate-invalid", in_active_chain=True), False),
])
def test_push_solution_of_a_block_the_node_already_has_is_found_when_active(
        answer: Submitted, found: bool) -> None:
    """Issue #13: the JD client's Template Provider propagated the block first (§7.7), so
    the node answers "duplicate": found when its active chain holds the block, else rejected."""
    with rig() as r:
        _, decl = _one_tx_job(r, 1_000)
        r.declare(decl)
        tip = completed(r.node.tip())
        push = solve_push(decl, tip.block_hash, tip.time + 1)

        def node(req: object) -> object:
            if isinstance(req, SubmitBlock):
                r.requests.append(req)
                return answer
            return r.answer(req)  # type: ignore[arg-type]

        out = run_step(r.session.receive(push), node)
        [req] = [q for q in r.requests if isinstance(q, SubmitBlock)]
        if found:
            [block] = out
            assert isinstance(block, FoundBlock) and block.block_hash == req.block_hash
            assert r.session.stats["blocks-found"] == 1
            assert r.session.stats["blocks-already-known"] == 1
            assert r.shared.found_blocks == [block]
        else:
            assert out == [] and r.shared.found_blocks == []
            assert r.session.stats["blocks-rejected"] == 1
            assert r.session.stats.get("blocks-found", 0) == 0


# -- the per-job adapter (0x4002) ---------------------------------------------------------------


def test_request_payout_outputs_binds_a_set_to_the_token() -> None:
    with rig() as r:
        r.set_up()
        token = r.token()
        # Not negotiated: discarded (0x0001), counted.
        assert r.send(m.RequestPayoutOutputs(1, token, 1_000)) == []
        assert r.session.stats["ignored-not-negotiated"] == 1
    with rig() as r:
        r.set_up((0x4002,))
        token = r.token()
        revenue = r.chain.subsidy(102)
        ok = r.one(m.RequestPayoutOutputs(3, token, revenue), m.RequestPayoutOutputsSuccess)
        rec = r.shared.tokens.get(token)
        assert rec is not None and isinstance(rec.bound_outputs, BoundOutputs)
        outs = rec.bound_outputs.outputs
        assert sum(o.value for o in outs) == revenue and ok.request_id == 3
        assert r.one(
            m.RequestPayoutOutputs(4, token, revenue), m.RequestPayoutOutputsError
        ).error_code == (E.PAYOUT_OUTPUTS_ALREADY_REQUESTED)
        assert r.one(
            m.RequestPayoutOutputs(5, r.token(2), 0), m.RequestPayoutOutputsError
        ).error_code == (E.INVALID_PAYOUT_VALUE)
        # A declaration with that token must pay exactly that set.
        decl = build_declaration(make_distribution(), r.chain, payout_outputs=outs)
        [ok2] = r.send(decl.message(token, dist_id=None))
        assert isinstance(ok2, m.DeclareMiningJobSuccess), ok2
        job = r.session.latest_job
        assert job is not None and job.mode == "per-job" and job.payout_outputs == outs


def test_sessions_share_the_server_state_but_not_their_tokens() -> None:
    """A session is the state of one connection: another session on the same shared state
    cannot declare with this one's token."""
    with rig() as r:
        r.set_up()
        token = r.token()
        other = JdsSession(2, r.shared)
        run_step(other.receive(SESSION_SETUP), r.answer)
        run_step(other.receive(m.RequestExtensions(1, (0x0003, 0x4003))), r.answer)
        decl = build_declaration(make_distribution(), r.chain)
        msg: m.DeclareMiningJob = decl.message(token)
        [err] = run_step(other.receive(msg), r.answer)
        assert isinstance(err, m.DeclareMiningJobError) and err.error_code == E.INVALID_TOKEN


def test_a_distribution_the_template_cannot_satisfy_is_its_own_error() -> None:
    """PR #203 (revision of 2026-09): additional outputs summing to T or more make the
    distribution unsatisfiable for that template (the JD client falls back): a declaration
    that arrives anyway is refused with unsatisfiable-distribution, not a tampering code."""
    from payouts.distribution.model import AdditionalOutput, Distribution
    from tests.jds.helpers import p2wpkh

    with KernelChain() as probe:
        from tests.jds.helpers import setup_chain

        setup_chain(probe)
        t = probe.subsidy(probe.tip_height + 1)
    base = make_distribution()
    unsat = Distribution(1, base.pool_payout, base.payouts, (AdditionalOutput(p2wpkh(50), t),))
    with rig(unsat) as r:
        r.set_up()
        decl = build_declaration(unsat, r.chain, payout_outputs=[TxOut(0, POOL_SCRIPT),
                                                                 TxOut(t, p2wpkh(50))])
        err = r.one(decl.message(r.token()), m.DeclareMiningJobError)
        assert err.error_code == "unsatisfiable-distribution", err
        assert b"F >= T" in err.error_details
        assert r.session.latest_job is None
