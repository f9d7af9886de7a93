"""Template Distribution's two sans-I/O sessions without a socket: our Template Provider's
(sv2.tdp.provider_session.TpSession) and the client's (sv2.tdp.session.TdpSession), wired to
each other, from SetupConnection to a SubmitSolution block that libbitcoinkernel accepts."""

from __future__ import annotations

import pytest

from payouts.node.kernel_chain import KernelChain
from payouts.tx.block import Block
from sv2.jdc import build_job_coinbase, constraints_for, solve
from sv2.messages.base import Message
from sv2.messages.common import SetupConnection, SetupConnectionError, SetupConnectionSuccess
from sv2.messages.template_distribution import (
    NewTemplate,
    RequestTransactionDataError,
    RequestTransactionDataSuccess,
    SetNewPrevHash,
)
from sv2.session import STATE_CHANGED, Close, Reply
from sv2.tdp import STALE_TEMPLATE_ID, TEMPLATE_ID_NOT_FOUND, TransactionDataUnavailable
from sv2.tdp.provider_session import TpSession
from sv2.tdp.session import TdpSession, TemplateActive
from sv2.template import JobTemplate
from tests.jdc.helpers import ChainNode, fee_tx, make_distribution, setup_chain
from tests.jds.helpers import completed


@pytest.mark.parametrize(
    ("protocol", "flags", "code", "error_flags"),
    [(1, 0, "unsupported-protocol", 0), (2, 0b10, "unsupported-feature-flags", 0b10)],
)
def test_provider_refuses_a_setup_and_closes_with_the_reason(
    protocol: int, flags: int, code: str, error_flags: int
) -> None:
    tp = TpSession(1, {})
    setup = SetupConnection(protocol, 2, 2, flags, "", 0, "", "", "", "")
    assert tp.on_setup(setup) == [
        SetupConnectionError(flags=error_flags, error_code=code),
        Close(f"SetupConnection refused: {code}"),
    ]
    assert not tp.setup


def test_provider_and_client_sessions_from_setup_to_a_block() -> None:
    with KernelChain() as chain:
        setup_chain(chain)
        tx = fee_tx(chain, 1, 900)
        node = ChainNode(chain)
        node.add_mempool(tx)
        stats: dict[str, int] = {}
        tp, client = TpSession(1, stats), TdpSession()

        def to_client(msgs: list[Message]) -> list[object]:
            return [out for m in msgs for out in client.receive(m)]

        ok = SetupConnectionSuccess(2, 0)
        assert tp.on_setup(client.setup_connection("127.0.0.1", 0)) == [ok]
        assert to_client([ok]) == [Reply("setup", 0, ok)]
        # The first constraints get a future template and the SetNewPrevHash naming it.
        assert tp.on_constraints(
            client.set_constraints(constraints_for(make_distribution()).message())
        )
        bt = completed(node.block_template())
        sent = tp.template_messages(bt, 7, future=True)
        assert [type(m) for m in sent] == [NewTemplate, SetNewPrevHash]
        out = to_client(sent)
        assert out == [STATE_CHANGED, TemplateActive(sent[0]), STATE_CHANGED]  # type: ignore[arg-type]
        assert client.book.current() == (sent[0], sent[1])
        assert stats["templates-sent"] == 1
        # Transactions: unknown id, stale tip, then the template's own.
        unknown = tp.on_request_tx_data(client.request_transactions(8), bt.prev_hash)
        assert unknown == RequestTransactionDataError(8, TEMPLATE_ID_NOT_FOUND)
        assert tp.on_request_tx_data(client.request_transactions(7), bytes(32)) == (
            RequestTransactionDataError(7, STALE_TEMPLATE_ID)
        )
        with pytest.raises(TransactionDataUnavailable) as info:
            client.transactions(7, RequestTransactionDataError(7, STALE_TEMPLATE_ID))
        assert info.value.code == STALE_TEMPLATE_ID
        reply = tp.on_request_tx_data(client.request_transactions(7), bt.prev_hash)
        assert isinstance(reply, RequestTransactionDataSuccess)
        assert [Reply("txdata", 7, reply)] == to_client([reply])
        txs = client.transactions(7, reply)
        assert client.cached_transactions(7) == txs == (tx.serialize(),)
        # The client mines the template; the provider rebuilds the block from SubmitSolution.
        template = JobTemplate.from_tdp(sent[0], sent[1], txs)  # type: ignore[arg-type]
        sol = solve(template, build_job_coinbase(make_distribution(), template))
        solved = tp.solution_block(client.submit_solution(template, sol))
        assert solved is not None
        jt, block = solved
        assert jt.height == 102 and block.meets_target()
        assert block.block_hash == sol.block_hash
        assert Block.parse(block.serialize()) == sol.block
        assert completed(node.submit_block(block.serialize())) is None
        assert chain.tip_hash == sol.block_hash
