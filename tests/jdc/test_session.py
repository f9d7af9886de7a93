"""The JD client's sans-I/O session (sv2.jdc.session.JdcSession) without a socket: the requests
it builds, what it makes of each message from the server, its decisions on a declaration's
answer -- and the two sessions, client and server, talking to each other directly (the
server's node answered from a libbitcoinkernel chain in process), from SetupConnection to a
block the kernel accepts."""

from __future__ import annotations

import pytest

from payouts.settlement.ctv import CtvNotActiveError, CtvParams
from payouts.settlement.modes import SettlementMode
from payouts.tx.txout import TxOut
from sv2 import messages as m
from sv2.declared_job import FoundBlock
from sv2.domain_messages import distribution_message, mode_to_message
from sv2.jdc import JdcSession, JobTemplate, constraints_for, serialize_output_vector, solve
from sv2.jdc.errors import JdcError, SetupRejected
from sv2.jdc.session import Accepted, ConstraintsChanged, GiveUp, Redeclare
from sv2.messages.base import Message
from sv2.session import STATE_CHANGED, Reply
from tests.jds.helpers import (
    POOL_SCRIPT,
    KernelTestNode,
    Rig,
    completed,
    fee_tx,
    make_distribution,
    rig,
)

DIST = make_distribution(1, payees=4)


def negotiated(extensions: tuple[int, ...] = (0x0003, 0x4003)) -> JdcSession:
    s = JdcSession(extensions=extensions, user_identifier="miner-7")
    req = s.request_extensions()
    assert s.receive(m.RequestExtensionsSuccess(req.request_id, extensions)) == [
        Reply("ext", req.request_id, m.RequestExtensionsSuccess(req.request_id, extensions))
    ]
    return s


def template(r: Rig, node: KernelTestNode) -> JobTemplate:
    return JobTemplate.from_block_template(completed(node.block_template()))


# -- requests and pushed state ------------------------------------------------------------------


def test_setup_and_extension_requests() -> None:
    s = JdcSession(extensions=(0x0003, 0x4003, 0x0003), user_identifier="miner-7")
    setup = s.setup_connection("pool.example", 3336)
    assert (setup.protocol, setup.min_version, setup.max_version, setup.flags) == (1, 2, 2, 1)
    assert (setup.endpoint_host, setup.endpoint_port, setup.device_id) == (
        "pool.example",
        3336,
        "miner-7",
    )
    assert s.receive(m.SetupConnectionSuccess(2, 0)) == [
        Reply("setup", 0, m.SetupConnectionSuccess(2, 0))
    ]
    a, b = s.request_extensions(), s.request_extensions()
    assert a.requested_extensions == (0x0003, 0x4003) and b.request_id == a.request_id + 1
    # An error naming required extensions ends the set-up; any other leaves the base protocol.
    with pytest.raises(SetupRejected) as info:
        s.on_extensions(m.RequestExtensionsError(a.request_id, (), (0x4002,)))
    assert info.value.code == "extensions-required"
    s.on_extensions(m.RequestExtensionsError(a.request_id, (0x0003, 0x4003), ()))
    assert s.negotiated == set()


def test_pushed_distribution_and_mode_update_the_constraints() -> None:
    s = JdcSession()
    # Before 0x0003 is negotiated a SetPayoutDistribution is discarded (0x0001).
    assert s.receive(distribution_message(DIST)) == []
    assert s.stats == {"distribution-not-negotiated": 1} and s.payouts.distribution is None
    with pytest.raises(JdcError) as info:
        s.payouts.constraints_message()
    assert info.value.code == "no-distribution"
    # Without 0x4003 the distribution settles in its coinbase: PR #203's constraints at once.
    s = negotiated((0x0003,))
    c = constraints_for(DIST)
    assert s.receive(distribution_message(DIST)) == [ConstraintsChanged(c), STATE_CHANGED]
    assert s.payouts.distribution == DIST and s.payouts.constraints_message() == c.message()
    assert s.payouts.mode_for(1).name == "coinbase"
    # With 0x4003 the constraints, and the distribution, wait for its mode (docs/extensions
    # §4: a ctv or musig2 coinbase carries one settlement output, not the payees).
    s = negotiated()
    assert s.receive(distribution_message(DIST)) == [STATE_CHANGED]
    assert s.payouts.ready(None, modes_negotiated=True) is None
    assert s.payouts.constraints is None
    with pytest.raises(JdcError) as info:
        s.payouts.mode_for(1)  # nothing is built on a guessed mode
    assert info.value.code == "no-settlement-mode"
    ctv = SettlementMode("ctv", CtvParams(arity=4))
    ctv_c = constraints_for(DIST, "ctv")
    assert ctv_c.max_additional_size == 43 and ctv_c.max_additional_size < c.max_additional_size
    assert s.receive(mode_to_message(ctv, 1)) == [ConstraintsChanged(ctv_c), STATE_CHANGED]
    assert s.payouts.ready(None, modes_negotiated=True) == DIST
    assert s.payouts.mode_for(1) == ctv
    # A mode for another distribution than the latest is ignored; ids only increase (PR #203
    # §3.1): a replayed distribution changes nothing.
    assert s.receive(mode_to_message(SettlementMode(), 2)) == []
    assert s.stats["mode-not-latest"] == 1
    assert s.receive(distribution_message(DIST)) == []
    assert s.stats["distribution-not-newer"] == 1


def test_a_refused_settlement_mode_makes_its_distribution_unusable() -> None:
    """docs/extensions §6: a SetSettlementMode the decoder refuses (here: the frame's
    channel_msg bit set) arrives as a malformed frame; the latest distribution is then never
    declared against: building its coinbase raises with the codec's code (the fallback)."""
    from sv2.connection import MalformedMessage
    from sv2.errors import DecodeError
    from sv2.framing import Frame

    s = negotiated()
    s.receive(distribution_message(DIST))
    frame = mode_to_message(SettlementMode(), 1).encode_frame()
    bad = Frame.decode(bytes([frame[0], frame[1] | 0x80]) + frame[2:])
    out = s.malformed(MalformedMessage(bad, DecodeError("channel_msg set")))
    assert out == [STATE_CHANGED] and s.payouts.refused[1][0] == "sv2-decode-error"
    assert s.payouts.ready(None, modes_negotiated=True) == DIST  # decided: no waiting for it
    with pytest.raises(JdcError) as info:
        s.payouts.mode_for(1)
    assert info.value.code == "sv2-decode-error" and s.payouts.constraints is None
    # A later valid mode for the same distribution makes it usable again.
    assert s.receive(mode_to_message(SettlementMode(), 1))[-1] == STATE_CHANGED
    assert s.payouts.mode_for(1).name == "coinbase" and 1 not in s.payouts.refused


def test_missing_transactions_answered_from_the_declaration() -> None:
    with rig() as r:
        a, b = fee_tx(r.chain, 1, 500), fee_tx(r.chain, 2, 700)
        client_node = KernelTestNode(r.chain)
        client_node.add_mempool(a)
        client_node.add_mempool(b)
        s = negotiated()
        s.receive(distribution_message(DIST))
        s.receive(mode_to_message(SettlementMode(), 1))
        t = template(r, client_node)
        cb = s.build_coinbase(t)
        msg = s.declare(t, bytes(16), cb)
        assert msg.wtxid_list == t.wtxids and msg.version == t.version
        assert [tlv.distribution_id for tlv in msg.tlvs] == [1]  # type: ignore[attr-defined]
        [answer] = s.receive(m.ProvideMissingTransactions(msg.request_id, (1, 0, 9)))
        assert answer == m.ProvideMissingTransactionsSuccess(
            msg.request_id, (t.transactions[1].serialize(), t.transactions[0].serialize())
        )
        assert s.stats["missing-txs-requests"] == 1
        assert s.receive(m.ProvideMissingTransactions(msg.request_id + 1, (0,))) == []
        assert s.stats["missing-txs-unknown-request"] == 1
        # The answer to the declaration ends what the session keeps for it.
        ok = m.DeclareMiningJobSuccess(msg.request_id, bytes(16))
        assert s.receive(ok) == [Reply("declare", msg.request_id, ok)]
        assert s.outstanding == {}


# -- decisions ----------------------------------------------------------------------------------


def test_judging_a_declaration_answer() -> None:
    with rig() as r:
        s = negotiated((0x0003,))
        s.receive(distribution_message(DIST))
        t = template(r, r.node)
        cb = s.build_coinbase(t)
        ok = s.judge(m.DeclareMiningJobSuccess(5, b"t" * 16), t, cb, 1)
        assert isinstance(ok, Accepted) and ok.job.token == b"t" * 16
        assert (ok.job.mode, ok.job.distribution_id, ok.job.attempts) == ("coinbase", 1, 1)
        stale = m.DeclareMiningJobError(6, "stale-payout-distribution", b"old")
        assert s.judge(stale, t, cb, 1) == Redeclare(1, "stale-payout-distribution", "old")
        # Stale again after max_redeclare attempts: give up.
        assert s.judge(stale, t, cb, 4) == GiveUp("stale-payout-distribution", "old")
        other = m.DeclareMiningJobError(7, "invalid-payout-distribution", b"")
        assert s.judge(other, t, cb, 1) == GiveUp("invalid-payout-distribution", "")
        assert s.stats["declare-error:stale-payout-distribution"] == 2
        assert s.stats["declared"] == 1


def test_coinbase_rules_without_0x0003_and_for_ctv() -> None:
    with rig() as r:
        t = template(r, r.node)
        base = negotiated(())
        with pytest.raises(JdcError) as info:
            base.build_coinbase(t)
        assert info.value.code == "no-pool-output"
        outs = serialize_output_vector([TxOut(0, POOL_SCRIPT), TxOut(0, b"\x6a")])
        cb = base.build_coinbase(t, token_outputs=outs)
        assert cb.mode == "pool" and cb.payout_outputs == (
            TxOut(t.revenue, POOL_SCRIPT),
            TxOut(0, b"\x6a"),
        )
        s = negotiated()
        s.receive(distribution_message(DIST))
        s.receive(mode_to_message(SettlementMode("ctv", CtvParams()), 1))
        assert s.mode_needing_ctv(None) == SettlementMode("ctv", CtvParams())
        with pytest.raises(CtvNotActiveError):  # the node was never asked: no CTV coinbase
            s.build_coinbase(t)


def test_per_job_outputs_checked() -> None:
    s = negotiated((0x0003,))
    with pytest.raises(JdcError) as info:
        s.request_payout_outputs(bytes(16), 1_000)
    assert info.value.code == "extension-not-negotiated"
    s = negotiated((0x4002,))
    req = s.request_payout_outputs(bytes(16), 1_000)
    assert req.available_payout_value == 1_000
    good = serialize_output_vector([TxOut(600, POOL_SCRIPT), TxOut(400, b"\x51")])
    assert s.payout_outputs(m.RequestPayoutOutputsSuccess(req.request_id, good), 1_000) == (
        TxOut(600, POOL_SCRIPT),
        TxOut(400, b"\x51"),
    )
    with pytest.raises(JdcError) as info:
        s.payout_outputs(m.RequestPayoutOutputsSuccess(req.request_id, good), 1_001)
    assert info.value.code == "invalid-payout-outputs"
    with pytest.raises(JdcError) as info:
        s.payout_outputs(m.RequestPayoutOutputsError(req.request_id, "invalid-payout-value"), 1)
    assert info.value.code == "invalid-payout-value"


# -- the client session and the server session, wired -------------------------------------------


def _to_client(s: JdcSession, r: Rig, msg: Message) -> list[Message]:
    """``msg`` through the server session; its answers through the client session, whose
    own answers go back to the server, until nothing is left. The replies the client's
    requests got, in order."""
    replies: list[Message] = []
    pending = [msg]
    while pending:
        for out in r.send(pending.pop(0)):
            if isinstance(out, FoundBlock):
                continue  # for the server's on_block; PushSolution has no reply
            assert isinstance(out, Message)
            for got in s.receive(out):
                if isinstance(got, Reply):
                    replies.append(got.message)
                elif isinstance(got, Message):
                    pending.append(got)
    return replies


def test_client_and_server_sessions_declare_and_find_a_block_without_a_socket() -> None:
    with rig(make_distribution(1, payees=4)) as r:
        known, hidden = fee_tx(r.chain, 1, 1_500), fee_tx(r.chain, 2, 2_500)
        r.node.add_mempool(known)  # the pool's node lacks `hidden`
        client_node = KernelTestNode(r.chain)
        client_node.add_mempool(known)
        client_node.add_mempool(hidden)
        s = JdcSession(user_identifier="miner")
        [ok] = _to_client(s, r, s.setup_connection("127.0.0.1", 0))
        assert isinstance(ok, m.SetupConnectionSuccess)
        [ext] = _to_client(s, r, s.request_extensions())
        assert isinstance(ext, m.RequestExtensionsSuccess)
        assert s.payouts.distribution == r.shared.book.current.distribution  # type: ignore[union-attr]
        assert s.payouts.constraints == constraints_for(s.payouts.distribution)
        [tok] = _to_client(s, r, s.allocate_token())
        assert (
            isinstance(tok, m.AllocateMiningJobTokenSuccess) and tok.coinbase_tx_outputs == b"\x00"
        )
        t = template(r, client_node)
        cb = s.build_coinbase(t)
        declare = s.declare(t, tok.mining_job_token, cb)
        assert isinstance(declare, m.DeclareMiningJob)
        [reply] = _to_client(s, r, declare)  # ProvideMissingTransactions answered on the way
        assert isinstance(reply, m.DeclareMiningJobSuccess), reply
        assert s.stats["missing-txs-requests"] == 1
        assert r.session.stats["missing-tx-requests"] == 1
        verdict = s.judge(reply, t, cb, 1)
        assert isinstance(verdict, Accepted)
        sol = solve(t, cb)
        assert _to_client(s, r, s.push_solution(sol)) == []
        [found] = r.shared.found_blocks
        assert r.chain.tip_hash == sol.block_hash == found.block_hash
        assert found.job.payout_outputs == cb.payout_outputs == verdict.job.payout_outputs


def test_a_distribution_the_template_cannot_satisfy_is_not_declared() -> None:
    """PR #203 (2026-09): F >= T: the client builds no coinbase (its declare_job turns this
    into the fallback event with the same code)."""
    from payouts.distribution.model import AdditionalOutput, Distribution
    from payouts.errors import UnsatisfiableDistributionError
    from tests.jds.helpers import p2wpkh

    with rig() as r:
        node = KernelTestNode(r.chain)
        t = template(r, node)
        unsat = Distribution(1, DIST.pool_payout, DIST.payouts,
                             (AdditionalOutput(p2wpkh(60), t.revenue),))
        s = negotiated()
        s.receive(distribution_message(unsat))
        s.receive(mode_to_message(SettlementMode(), 1))
        with pytest.raises(UnsatisfiableDistributionError) as info:
            s.build_coinbase(t)
        assert info.value.code == "unsatisfiable-distribution"
