"""Settlements over the API with the settlement runner on the kernel node (SQLite and
PostgreSQL): reads with raw txs, the broadcast action's per-tx node results, the CTV exit path
(broadcast by the test itself and checked on chain), payout landings in the history, the musig2
fallback (409 while BIP-68 locked, then sent and mined) and the lifecycle's signing session
served by the /v1/musig2 endpoints."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settlement.ctv import CtvParams
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_txs
from payouts.settlement.modes import SettlementMode
from payouts.settlement.runner import SettlementRunner
from payouts.tx.transaction import Tx
from tests.api.conftest import assert_problem, bearer
from tests.api.musig2_signing import assert_outputs_on_chain, sign_session
from tests.api.settle_helpers import (
    FALLBACK_DELAY,
    Found,
    fallback_signer,
    find_block,
    miner_script,
    musig2_mode,
    signer_keys,
)
from tests.lifecycle.helpers import mine, mine_to, run

CTV = SettlementMode("ctv", CtvParams(arity=2))


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


def app_client(service: PoolService, runner: SettlementRunner | None = None) -> TestClient:
    return TestClient(create_app(service, runner=runner, rate_limit=None))


def poll(client: TestClient, runner: SettlementRunner) -> list[str]:
    """One runner step in the app's event loop (where the API's actions run too)."""
    return [e.kind for e in client.portal.call(runner.poll_once)]  # type: ignore[union-attr]


def _txids(r: dict[str, Any]) -> list[list[str]]:
    return [x["txids"] for x in r["results"]]


def test_ctv_reads_broadcast_results_and_history(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    f = find_block(service, node, CTV, n=5)
    rd, wr = bearer(token("read")), bearer(token("settlements:write"))
    with app_client(service, f.runner) as client:
        (listed,) = client.get("/v1/settlements", headers=rd).json()
        assert (listed["block_id"], listed["mode"], listed["phase"]) == (f.block_id, "ctv",
                                                                          "waiting")
        one = client.get(f"/v1/settlements/{f.block_id}", headers=rd).json()
        rows = load_txs(service.engine, f.block_id)
        assert [t["raw"] for t in one["txs"]] == [r.raw.hex() for r in rows]
        assert one["funding_txid"] == f.block.txs[0].txid[::-1].hex()
        # Before maturity nothing may be broadcast (100 confirmations): a 409 naming the tip.
        body = assert_problem(client.post(f"/v1/settlements/{f.block_id}/broadcast",
                                          headers=wr), 409, "not-mature")
        assert body["mature_at_tip"] == first_mature_tip(f.height)
        mine_to(node, first_mature_tip(f.height))
        r = client.post(f"/v1/settlements/{f.block_id}/broadcast", headers=wr)
        assert r.status_code == 200, r.text
        out = r.json()
        root = rows[0].txid[::-1].hex()
        # The refused call above stepped nothing: this step confirms the block too.
        assert [e["kind"] for e in out["events"]] == ["confirmed", "mature", "broadcast"]
        assert out["results"] == [{"txids": [root], "result": "accepted", "reason": ""}]
        assert out["settlement"]["phase"] == "broadcasting"
        # Again: the node already has it.
        again = client.post(f"/v1/settlements/{f.block_id}/broadcast", headers=wr).json()
        assert [x["result"] for x in again["results"]] == ["already-known"]
        assert _txids(again) == [[root]]
        for _ in range(len(rows)):
            mine(node, 1)
            if client.post(f"/v1/settlements/{f.block_id}/broadcast",
                           headers=wr).json()["settlement"]["status"] == "paid":
                break
        assert client.get(f"/v1/settlements/{f.block_id}", headers=rd).json()["phase"] == "paid"
        # History: each miner's payout landed in a fan-out leaf, confirmed on the kernel chain.
        for i in range(5):
            (b,) = client.get(f"/v1/miners/m{i}/payouts").json()["blocks"]
            utxo = run(node.get_utxo(bytes.fromhex(b["payout_txid"])[::-1], b["payout_vout"]))
            assert b["payout_status"] == "confirmed" and utxo is not None
            assert (utxo.value, utxo.script) == (b["paid_sats"], miner_script(i))


def test_exit_path_is_broadcastable_and_pays_the_miner(
    service: PoolService, node: KernelNode
) -> None:
    f = find_block(service, node, CTV, n=5)
    service.register_miner("idle", miner_script(99))  # no shares: not paid by the block
    with app_client(service, f.runner) as client:
        url = f"/v1/miners/m3/payouts/{f.block_id}/exit-path"
        r = client.get(url)
        assert r.status_code == 200, r.text
        path = r.json()
        assert path["funding_txid"] == f.block.txs[0].txid[::-1].hex()
        txs = [Tx.parse(bytes.fromhex(t["raw"])) for t in path["transactions"]]
        assert len(txs) >= 2 and [t["level"] for t in path["transactions"]] == list(
            range(len(txs)))
        # Each spends the previous one; the first spends the coinbase's commitment output.
        first = txs[0].inputs[0].prevout
        assert (first.txid, first.n) == (f.block.txs[0].txid, path["funding_vout"])
        for parent, child in itertools.pairwise(txs):
            assert child.inputs[0].prevout.txid == parent.txid
        # The miner broadcasts it alone, in order, once the coinbase is mature: the node
        # (libbitcoinkernel's consensus checks) accepts every tx and the output is there.
        mine_to(node, first_mature_tip(f.height))
        for tx in txs:
            run(node.send_raw_transaction(tx.serialize()))
        mine(node, 1)
        out = path["output"]
        utxo = run(node.get_utxo(bytes.fromhex(out["txid"])[::-1], out["vout"]))
        assert utxo is not None and utxo.value == out["amount"] > 0
        assert utxo.script == miner_script(3) and out["script"] == miner_script(3).hex()
        assert_problem(client.get(f"/v1/miners/idle/payouts/{f.block_id}/exit-path"), 404,
                       "no-payout-in-block")
        assert_problem(client.get(f"/v1/miners/m3/payouts/{f.block_id + 50}/exit-path"), 404,
                       "unknown-block")
        assert_problem(client.get(f"/v1/miners/nobody/payouts/{f.block_id}/exit-path"), 404,
                       "unknown-miner")


def test_coinbase_mode_history_and_refused_actions(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    f = find_block(service, node, SettlementMode())
    wr = bearer(token("settlements:write"))
    with app_client(service, f.runner) as client:
        for i in range(4):
            (b,) = client.get(f"/v1/miners/m{i}/payouts").json()["blocks"]
            assert b["payout_txid"] == f.block.txs[0].txid[::-1].hex()
            utxo = run(node.get_utxo(f.block.txs[0].txid, b["payout_vout"]))
            assert utxo is not None and utxo.is_coinbase
            assert (utxo.value, utxo.script) == (b["paid_sats"], miner_script(i))
        for action in ("broadcast", "fallback"):
            assert_problem(client.post(f"/v1/settlements/{f.block_id}/{action}", headers=wr),
                           409, "nothing-to-broadcast")
        assert_problem(client.get(f"/v1/miners/m1/payouts/{f.block_id}/exit-path"), 409,
                       "not-ctv-settlement")
        assert_problem(client.post("/v1/settlements/999/broadcast", headers=wr), 404,
                       "unknown-block")


def test_actions_without_a_runner_are_503(
    client: TestClient, service: PoolService, token: Callable[..., str]
) -> None:
    fitted = service.publish_distribution(312_500_000)
    service.record_block(distribution_id=fitted.distribution.distribution_id,
                         revenue=312_500_000, block_hash=bytes(range(32)), height=101)
    assert_problem(client.post("/v1/settlements/1/broadcast",
                               headers=bearer(token("settlements:write"))),
                   503, "settlement-not-running")
    assert_problem(client.get("/v1/settlements/1", headers=bearer(token("read"))), 404,
                   "untracked-block")


def _musig2_block(service: PoolService, node: KernelNode) -> Found:
    mode = SettlementMode("musig2", musig2=musig2_mode(4))
    return find_block(service, node, mode, signer=fallback_signer())


def test_musig2_fallback_refused_while_locked_then_sent_and_paid(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    f = _musig2_block(service, node)
    wr = bearer(token("settlements:write"))
    with app_client(service, f.runner) as client:
        url = f"/v1/settlements/{f.block_id}/fallback"
        assert_problem(client.post(url, headers=wr), 409, "fallback-locked")
        mine_to(node, first_mature_tip(f.height))
        assert poll(client, f.runner) == ["confirmed", "mature", "bound", "signing-started"]
        sid = client.get(f"/v1/settlements/{f.block_id}",
                         headers=bearer(token("read"))).json()["signing_session"]
        assert sid == f"block-{f.block_id}"
        # Mature, but BIP-68 holds the fallback until height h + n: refused, nothing changed.
        body = assert_problem(client.post(url, headers=wr), 409, "fallback-locked")
        assert body["valid_from_height"] == f.height + FALLBACK_DELAY
        assert client.get(f"/v1/musig2/sessions/{sid}").json()["state"] == "collecting-nonces"
        assert load_txs(service.engine, f.block_id) == []
        mine_to(node, f.height + FALLBACK_DELAY - 1)  # the next block may hold it
        r = client.post(url, headers=wr)
        assert r.status_code == 200, r.text
        out = r.json()
        assert [e["kind"] for e in out["events"]] == ["signing-failed", "broadcast"]
        (row,) = load_txs(service.engine, f.block_id)
        assert row.role == "fallback"
        assert out["results"] == [{"txids": [row.txid[::-1].hex()], "result": "accepted",
                                   "reason": ""}]
        assert client.get(f"/v1/musig2/sessions/{sid}").json()["failure"] == "aborted"
        mine(node, 1)
        assert poll(client, f.runner) == ["tx-confirmed", "paid"]
        for i in range(4):
            (b,) = client.get(f"/v1/miners/m{i}/payouts").json()["blocks"]
            assert b["payout_txid"] == row.txid[::-1].hex()
            utxo = run(node.get_utxo(row.txid, b["payout_vout"]))
            assert utxo is not None and (utxo.value, utxo.script) == (b["paid_sats"],
                                                                      miner_script(i))


def test_musig2_signers_sign_the_lifecycle_session_through_the_api(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    f = _musig2_block(service, node)
    keys = signer_keys(4)
    with app_client(service, f.runner) as client:
        mine_to(node, first_mature_tip(f.height))
        poll(client, f.runner)
        sid = f"block-{f.block_id}"
        s = client.get(f"/v1/musig2/sessions/{sid}").json()
        session = f.runner.lifecycle.session(f.block_id)
        assert session is not None and s["sighash"] == session.msg.hex()
        done = sign_session(client.get, lambda url, body: client.post(url, json=body), sid,
                            session, keys)
        assert done["state"] == "complete"
        # Signed: the operator can no longer take the fallback.
        assert_problem(client.post(f"/v1/settlements/{f.block_id}/fallback",
                                   headers=bearer(token("settlements:write"))),
                       409, "signing-complete")
        assert poll(client, f.runner) == ["broadcast"]
        mine(node, 1)
        assert poll(client, f.runner) == ["tx-confirmed", "paid"]
        (row,) = load_txs(service.engine, f.block_id)
        assert row.role == "cooperative"
        assert_outputs_on_chain(node, row)
