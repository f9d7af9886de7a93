"""What a miner runs without writing code: ``payouts ctv exit-path`` (fetch, check, print the
CTV exit path; the printed transactions are accepted by the node) and ``payouts musig2 sign``
(each committee member signs the lifecycle's session through the API from its own key)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from payouts.cli import app
from payouts.cli.ctv_exit import ExitPathError, check_exit_path
from payouts.cli.musig2_signer import SignerError, sign_session
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settlement.ctv import CtvParams
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_txs
from payouts.settlement.modes import SettlementMode
from payouts.tx.address import script_to_address
from payouts.tx.transaction import Tx
from tests.api.musig2_signing import assert_outputs_on_chain
from tests.api.settle_helpers import (
    fallback_signer,
    find_block,
    miner_script,
    miner_sk,
    musig2_mode,
)
from tests.lifecycle.helpers import mine, mine_to, run


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


def test_exit_path_command_checks_and_prints_a_path_the_node_accepts(
        service: PoolService, node: KernelNode, monkeypatch: pytest.MonkeyPatch) -> None:
    f = find_block(service, node, SettlementMode("ctv", CtvParams(arity=2)), n=5)
    with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as client:
        import httpx

        monkeypatch.setattr(httpx, "get", lambda url, **_: client.get(
            url.removeprefix("http://pool")))
        address = script_to_address(miner_script(3), "regtest")
        r = CliRunner().invoke(app, ["ctv", "exit-path", "m3", str(f.block_id), "--pool",
                                     "http://pool", "--address", address])
        assert r.exit_code == 0, r.output
        assert "CTV commitment matches" in r.stderr
        raws = r.stdout.split()
        doc = client.get(f"/v1/miners/m3/payouts/{f.block_id}/exit-path").json()
        assert raws == [t["raw"] for t in doc["transactions"]] and len(raws) >= 2
        # another miner's address: refused before anything is printed
        other = script_to_address(miner_script(2), "regtest")
        bad = CliRunner().invoke(app, ["ctv", "exit-path", "m3", str(f.block_id), "--pool",
                                       "http://pool", "--address", other])
        assert bad.exit_code != 0 and bad.stdout == ""
        assert "does not pay the given address" in str(bad.exception)
    mine_to(node, first_mature_tip(f.height))
    for raw in raws:
        run(node.send_raw_transaction(bytes.fromhex(raw)))
    mine(node, 1)
    out = doc["output"]
    utxo = run(node.get_utxo(bytes.fromhex(out["txid"])[::-1], out["vout"]))
    assert utxo is not None and utxo.script == miner_script(3)


def _tampered(doc: dict[str, Any], level: int) -> dict[str, Any]:
    tx = Tx.parse(bytes.fromhex(doc["transactions"][level]["raw"]))
    raw = bytearray(tx.serialize())
    raw[-5] ^= 1  # the locktime's low byte: another transaction
    txs = [dict(t) for t in doc["transactions"]]
    txs[level]["raw"] = bytes(raw).hex()
    return {**doc, "transactions": txs}


def test_a_path_the_commitments_do_not_match_is_refused(service: PoolService,
                                                        node: KernelNode) -> None:
    f = find_block(service, node, SettlementMode("ctv", CtvParams(arity=2)), n=5)
    with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as client:
        doc = client.get(f"/v1/miners/m1/payouts/{f.block_id}/exit-path").json()
    assert check_exit_path(doc).notes
    last = len(doc["transactions"]) - 1
    with pytest.raises(ExitPathError, match=r"commits to|does not spend"):
        check_exit_path(_tampered(doc, last))
    with pytest.raises(ExitPathError, match="coinbase's commitment output"):
        check_exit_path({**doc, "funding_vout": doc["funding_vout"] + 1})
    with pytest.raises(ExitPathError, match="differs from what the pool reports"):
        check_exit_path({**doc, "output": {**doc["output"], "amount": 1}})


def test_each_member_signs_with_the_sign_command_logic(service: PoolService,
                                                       node: KernelNode,
                                                       tmp_path: Path) -> None:
    f = find_block(service, node, SettlementMode("musig2", musig2=musig2_mode(4)),
                   signer=fallback_signer())
    with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as client:
        mine_to(node, first_mature_tip(f.height))
        client.portal.call(f.runner.poll_once)  # type: ignore[union-attr]
        sid = f"block-{f.block_id}"
        with pytest.raises(SignerError, match="not in the session's committee"):
            sign_session(client, sid, bytes.fromhex("55" * 32))
        results: dict[int, Any] = {}

        def member(i: int) -> None:
            results[i] = sign_session(client, sid, miner_sk(i), poll=0.02, timeout=30)

        threads = [threading.Thread(target=member, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == [0, 1, 2, 3]
        assert {r.session["state"] for r in results.values()} == {"complete"}
        assert sorted(r.signer_index for r in results.values()) == [0, 1, 2, 3]
        # a nonce is used once: signing the same session again is refused
        with pytest.raises(SignerError, match="used once"):
            sign_session(client, sid, miner_sk(0))
        assert [e.kind for e in client.portal.call(f.runner.poll_once)] == [  # type: ignore[union-attr]
            "broadcast"]
    mine(node, 1)
    (row,) = load_txs(service.engine, f.block_id)
    assert row.role == "cooperative"
    assert_outputs_on_chain(node, row)
