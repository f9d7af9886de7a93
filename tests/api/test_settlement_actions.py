"""Operator actions and signers against the settlement runner on the kernel node (SQLite and
PostgreSQL):

- a refused action changes nothing: a broadcast at 99 confirmations (``not-mature``) or of a
  block the node reorged out (``not-in-active-chain``), a fallback still BIP-68 locked, leave
  every block, settlement, tx and ledger line as they were (no lifecycle step ran; the poller
  alone confirms or orphans the block afterwards);
- signers posting nonces and partial signatures from many threads at once while the runner
  ticks the same session: the calls that change the session (tick, add_nonce,
  add_partial_sig, abort) never overlap (each runs under the store session's lock, on the
  API's threadpool or the loop), and the session ends with a signature the kernel accepts.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routers.musig2 import nonce_auth_message
from payouts.crypto import musig2 as m
from payouts.crypto import schnorr
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settlement.ctv import CtvParams
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_settlements, load_txs
from payouts.settlement.modes import SettlementMode
from payouts.settlement.musig2.session import SigningSession
from payouts.settlement.runner import SettlementRunner
from payouts.store.ledger import export_ledger, list_blocks
from tests.api.conftest import assert_problem, bearer
from tests.api.musig2_signing import assert_outputs_on_chain
from tests.api.settle_helpers import (
    FALLBACK_DELAY,
    fallback_signer,
    find_block,
    musig2_mode,
    signer_keys,
)
from tests.lifecycle.helpers import mine, mine_to, run

SESSION_CALLS = ("tick", "add_nonce", "add_partial_sig", "abort")


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


def snapshot(service: PoolService) -> tuple[Any, ...]:
    """Everything an action could change in the store."""
    e = service.engine
    return list_blocks(e), load_settlements(e), load_txs(e), export_ledger(e)


def poll(client: TestClient, runner: SettlementRunner) -> list[str]:
    return [e.kind for e in client.portal.call(runner.poll_once)]  # type: ignore[union-attr]


def test_refused_broadcasts_step_nothing(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    f = find_block(service, node, SettlementMode("ctv", CtvParams(arity=2)), n=3)
    wr = bearer(token("settlements:write"))
    url = f"/v1/settlements/{f.block_id}/broadcast"
    with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as client:
        mine_to(node, first_mature_tip(f.height) - 1)  # 99 confirmations
        before = snapshot(service)
        body = assert_problem(client.post(url, headers=wr), 409, "not-mature")
        assert (body["mature_at_tip"], body["tip"]) == (first_mature_tip(f.height),
                                                          first_mature_tip(f.height) - 1)
        # The store still says found: the poller, not the refused action, confirms it.
        assert snapshot(service) == before and before[0][0].status == "found"
        assert node.mempool.entries == {}  # and nothing was broadcast
        # A reorg the store has not seen yet: refused, and not orphaned by the action either.
        run(node.invalidate_block(f.block.hash))
        body = assert_problem(client.post(url, headers=wr), 409, "not-in-active-chain")
        assert snapshot(service) == before
        run(node.reconsider_block(f.block.hash))
        assert poll(client, f.runner) == ["confirmed"]
        mine(node, 1)
        r = client.post(url, headers=wr)
        assert r.status_code == 200, r.text
        assert [e["kind"] for e in r.json()["events"]] == ["mature", "broadcast"]
        assert [x["result"] for x in r.json()["results"]] == ["accepted"]


def test_refused_fallback_steps_nothing(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    f = find_block(service, node, SettlementMode("musig2", musig2=musig2_mode(3)),
                   signer=fallback_signer())
    wr = bearer(token("settlements:write"))
    with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as client:
        mine_to(node, first_mature_tip(f.height))  # mature on the node, never polled
        before = snapshot(service)
        body = assert_problem(client.post(f"/v1/settlements/{f.block_id}/fallback",
                                          headers=wr), 409, "fallback-locked")
        assert body["valid_from_height"] == f.height + FALLBACK_DELAY
        assert snapshot(service) == before and before[0][0].status == "found"
        assert f.runner.lifecycle.session(f.block_id) is None  # no session opened either


def _record_session_calls(monkeypatch: pytest.MonkeyPatch
                          ) -> tuple[list[tuple[str, int]], list[str]]:
    """Wrap the session's methods: who called (thread id) and whether a call began while
    another thread's call was running (a method calling another on the same thread, e.g.
    ``add_nonce`` ticking first, is not an overlap). Each call holds on for 1 ms so that calls
    from two threads would overlap."""
    calls: list[tuple[str, int]] = []
    overlaps: list[str] = []
    running: list[int] = []  # thread id per call in progress
    for name in SESSION_CALLS:
        original = getattr(SigningSession, name)

        def wrapped(self: SigningSession, *args: Any, __f: Any = original,
                    __name: str = name, **kwargs: Any) -> Any:
            me = threading.get_ident()
            if any(t != me for t in running):
                overlaps.append(__name)
            running.append(me)
            calls.append((__name, me))
            try:
                time.sleep(0.001)
                return __f(self, *args, **kwargs)
            finally:
                running.remove(me)

        monkeypatch.setattr(SigningSession, name, functools.wraps(original)(wrapped))
    return calls, overlaps


def test_concurrent_signers_and_ticks_never_overlap(
    service: PoolService, node: KernelNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 6
    f = find_block(service, node, SettlementMode("musig2", musig2=musig2_mode(n)),
                   signer=fallback_signer())
    keys = signer_keys(n)
    with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as client:
        portal = client.portal
        assert portal is not None
        mine_to(node, first_mature_tip(f.height))
        assert poll(client, f.runner) == ["confirmed", "mature", "bound", "signing-started"]
        sid = f"block-{f.block_id}"
        session = f.runner.lifecycle.session(f.block_id)
        assert session is not None
        pubkeys = session.pubkeys
        calls, overlaps = _record_session_calls(monkeypatch)
        stop = threading.Event()

        def ticker() -> int:
            ticks = 0
            while not stop.is_set():
                assert poll(client, f.runner) in ([], ["broadcast"])
                assert client.get(f"/v1/musig2/sessions/{sid}").status_code == 200
                ticks += 1
            return ticks

        def post(path: str, body: dict[str, Any]) -> tuple[int, int]:
            r = client.post(f"/v1/musig2/sessions/{sid}/{path}", json=body)
            return body["signer_index"], r.status_code if r.status_code == 200 else (
                r.status_code, r.json()["code"])

        def check(results: list[tuple[int, Any]]) -> None:
            """Every signer got through once; a retransmission is idempotent (200) until the
            round closes, then refused as being for the closed round (409 wrong-state)."""
            assert {i for i, code in results if code == 200} == set(range(n))
            assert {code for _, code in results} <= {200, (409, "wrong-state")}

        nonces = {}
        for i, pk in enumerate(pubkeys):
            nonces[i] = m.nonce_gen(keys[pk], pk, session.keyagg, session.msg)
        with ThreadPoolExecutor(max_workers=2 * n + 1) as pool:
            ticks = pool.submit(ticker)
            try:
                # Round 1: each signer's nonce posted twice at once (a retransmission is
                # idempotent), from 2n threads, while the runner ticks.
                codes = list(pool.map(lambda i: post("nonces", {
                    "signer_index": i % n, "pubnonce": nonces[i % n][1].hex(),
                    "auth": schnorr.sign(nonce_auth_message(sid, i % n, nonces[i % n][1]),
                                         keys[pubkeys[i % n]]).hex()}), range(2 * n)))
                check(codes)
                agg = client.get(f"/v1/musig2/sessions/{sid}").json()["aggnonce"]
                assert agg == m.nonce_agg([nonces[i][1] for i in range(n)]).hex()
                ctx = m.SessionContext(bytes.fromhex(agg), session.keyagg, session.msg)
                psigs = {i: m.partial_sign(nonces[i][0], keys[pk], ctx)
                         for i, pk in enumerate(pubkeys)}
                codes = list(pool.map(lambda i: post("partial-signatures", {
                    "signer_index": i % n, "psig": psigs[i % n].hex()}), range(2 * n)))
                check(codes)
            finally:
                stop.set()
            assert ticks.result() > 0
        assert client.get(f"/v1/musig2/sessions/{sid}").json()["state"] == "complete"
        # Every change to the session ran one at a time, from several threads.
        assert overlaps == []
        names = {name for name, _ in calls}
        assert {"tick", "add_nonce", "add_partial_sig"} <= names
        assert len({t for _, t in calls}) > 1
        # The ticks may have sent the cooperative spend already; either way it confirms.
        poll(client, f.runner)
        mine(node, 1)
        assert poll(client, f.runner) == ["tx-confirmed", "paid"]
        (row,) = load_txs(service.engine, f.block_id)
        assert row.role == "cooperative"
        assert_outputs_on_chain(node, row)
