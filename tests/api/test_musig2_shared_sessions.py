"""MuSig2 signing sessions shared by several processes through the store (issue 15).

- Two pool services, each with its own engine, settlement runner and API app, on one database
  (SQLite and PostgreSQL; on PostgreSQL these are two processes' worth of connections): both
  runners step the matured block, one session is opened; the committee posts its nonces and
  partial signatures alternately to the two APIs; the session completes (a third API with no
  runner serves it and names it in the settlement), the cooperative spend is persisted and
  broadcast once and the kernel confirms it; the block is paid once.
- Real processes (PostgreSQL): two ``payouts serve`` processes on one schema; an operator
  session created on A, nonces split between A and B, A killed (SIGKILL) in round 2 and
  started again: the session resumes from the store and completes; both report the same
  signature, valid under the session's key; a retry is a no-op and a conflicting nonce a 409.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api import store
from api.app import create_app
from api.routers.musig2 import nonce_auth_message
from payouts.crypto import musig2 as m
from payouts.crypto import schnorr
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_txs
from payouts.settlement.modes import SettlementMode
from payouts.settlement.runner import SettlementRunner
from payouts.store import migrate
from payouts.store.engine import make_engine
from payouts.store.ledger import get_block
from tests.api.conftest import bearer
from tests.api.musig2_signing import assert_outputs_on_chain
from tests.api.settle_helpers import find_block, musig2_mode, signer_keys
from tests.api.test_cli import _free_port
from tests.lifecycle.helpers import mine, mine_to
from tests.store.conftest import count


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


def _poll(client: TestClient, runner: SettlementRunner) -> list[str]:
    return [e.kind for e in client.portal.call(runner.poll_once)]  # type: ignore[union-attr]


def test_two_services_one_store_one_session_one_spend(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    n = 4
    mode = SettlementMode("musig2", musig2=musig2_mode(n))
    f = find_block(service, node, mode)
    other_engine = make_engine(service.engine.url.render_as_string(hide_password=False))
    other = PoolService(service.settings, engine=other_engine, migrate=False)
    runner_b = SettlementRunner(other, node, mode=mode, interval=3600.0)
    keys = signer_keys(n)
    sid = f"block-{f.block_id}"
    try:
        with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as a, \
                TestClient(create_app(other, runner=runner_b, rate_limit=None)) as b:
            mine_to(node, first_mature_tip(f.height))
            events = _poll(a, f.runner) + _poll(b, runner_b) + _poll(a, f.runner)
            assert events.count("signing-started") == 1
            assert count(service.engine, "musig_sessions") == 1
            url = f"/v1/musig2/sessions/{sid}"
            view_a, view_b = a.get(url), b.get(url)
            assert view_a.status_code == view_b.status_code == 200
            assert view_a.json() == view_b.json()
            session = f.runner.lifecycle.session(f.block_id)
            assert session is not None
            pubkeys = [bytes.fromhex(p) for p in view_a.json()["pubkeys"]]
            secnonces = {}
            for i, pk in enumerate(pubkeys):
                sn, pn = m.nonce_gen(keys[pk], pk, session.keyagg, session.msg)
                secnonces[i] = sn
                auth = schnorr.sign(nonce_auth_message(sid, i, pn), keys[pk])
                body = {"signer_index": i, "pubnonce": pn.hex(), "auth": auth.hex()}
                r = (a if i % 2 else b).post(f"/v1/musig2/sessions/{sid}/nonces", json=body)
                assert r.status_code == 200, r.text
            agg = a.get(f"/v1/musig2/sessions/{sid}").json()["aggnonce"]
            assert agg == b.get(f"/v1/musig2/sessions/{sid}").json()["aggnonce"] is not None
            ctx = m.SessionContext(bytes.fromhex(agg), session.keyagg, session.msg)
            for i, pk in enumerate(pubkeys):
                psig = m.partial_sign(secnonces[i], keys[pk], ctx)
                r = (b if i % 2 else a).post(f"/v1/musig2/sessions/{sid}/partial-signatures",
                                             json={"signer_index": i, "psig": psig.hex()})
                assert r.status_code == 200, r.text
            done_a = a.get(f"/v1/musig2/sessions/{sid}").json()
            assert done_a["state"] == "complete"
            assert done_a == b.get(f"/v1/musig2/sessions/{sid}").json()
            # A frontend running no settlement runner serves the session and names it too.
            with TestClient(create_app(other, rate_limit=None)) as front:
                assert front.get(f"/v1/musig2/sessions/{sid}").json() == done_a
                one = front.get(f"/v1/settlements/{f.block_id}",
                                headers=bearer(token("read"))).json()
                assert one["signing_session"] == sid
            # Both runners step: the spend is built and marked broadcast once.
            events = _poll(b, runner_b) + _poll(a, f.runner) + _poll(b, runner_b)
            assert events.count("broadcast") == 1
            (row,) = load_txs(service.engine, f.block_id)
            assert row.role == "cooperative" and row.status == "broadcast"
            mine(node, 1)
            events = _poll(a, f.runner) + _poll(b, runner_b)
            assert events.count("paid") == 1
            assert get_block(service.engine, f.block_id).status == "paid"  # type: ignore[union-attr]
            assert_outputs_on_chain(node, row)
    finally:
        other_engine.dispose()


# -- real processes --------------------------------------------------------------------------


def _serve(url: str, port: int, data_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    env |= {"PAYOUTS_DATABASE_URL": url, "PAYOUTS_DATA_DIR": str(data_dir),
            "PAYOUTS_API__PORT": str(port), "PAYOUTS_NETWORK": "regtest"}
    return subprocess.Popen([sys.executable, "-m", "payouts", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)


def _wait_http(proc: subprocess.Popen[str], url: str, timeout: float = 120.0) -> None:
    """Until ``url`` answers (a loaded 2-core machine has taken over 30 s to start a server)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout:g} s"
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.communicate(timeout=30)


@pytest.mark.postgres
def test_two_serve_processes_share_a_session_and_survive_a_kill(
    postgres: Any, tmp_path: Path
) -> None:
    url = postgres.new_url()
    engine: Engine = make_engine(url)
    migrate.upgrade(engine)
    secret, _ = store.create_token(engine, "ops", ["settlements:write"])
    n = 6
    sks = [os.urandom(32) for _ in range(n)]
    by_pk = {m.individual_pubkey(sk): sk for sk in sks}
    pubkeys = m.key_sort(list(by_pk))
    msg = os.urandom(32)
    port_a, port_b = _free_port(), _free_port()
    a = _serve(url, port_a, tmp_path / "a")
    b = _serve(url, port_b, tmp_path / "b")
    base_a, base_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    http = httpx.Client(timeout=30)
    try:
        _wait_http(a, f"{base_a}/v1/health")
        _wait_http(b, f"{base_b}/v1/health")
        created = http.post(f"{base_a}/v1/musig2/sessions", headers={
            "Authorization": f"Bearer {secret}"}, json={
            "sighash": msg.hex(), "pubkeys": [p.hex() for p in pubkeys],
            "nonce_timeout_s": 600, "sig_timeout_s": 600})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        url_a, url_b = f"{base_a}/v1/musig2/sessions/{sid}", f"{base_b}/v1/musig2/sessions/{sid}"
        assert http.get(url_b).json() == created.json()  # B serves A's session
        keyagg = m.key_agg(pubkeys)
        secnonces, bodies = {}, {}
        for i, pk in enumerate(pubkeys):
            sn, pn = m.nonce_gen(by_pk[pk], pk, keyagg, msg)
            secnonces[i] = sn
            auth = schnorr.sign(nonce_auth_message(sid, i, pn), by_pk[pk])
            bodies[i] = {"signer_index": i, "pubnonce": pn.hex(), "auth": auth.hex()}
        for i in range(n - 1):
            r = http.post(f"{url_b if i % 2 else url_a}/nonces", json=bodies[i])
            assert r.status_code == 200, r.text
        # While round 1 is open: a retry to the other process is 200 and writes nothing;
        # another nonce for a filled slot is 409 duplicate-nonce (and recorded).
        version = _version(engine, sid)
        assert http.post(f"{url_a}/nonces", json=bodies[1]).status_code == 200
        assert _version(engine, sid) == version
        _, other_pn = m.nonce_gen(by_pk[pubkeys[1]], pubkeys[1], keyagg, msg)
        conflict = http.post(f"{url_a}/nonces", json={
            "signer_index": 1, "pubnonce": other_pn.hex(),
            "auth": schnorr.sign(nonce_auth_message(sid, 1, other_pn), by_pk[pubkeys[1]]).hex()})
        assert conflict.status_code == 409 and conflict.json()["code"] == "duplicate-nonce"
        r = http.post(f"{url_b}/nonces", json=bodies[n - 1])
        assert r.status_code == 200, r.text
        view = http.get(url_a).json()
        assert view["state"] == "collecting-partial-sigs"
        assert view["aggnonce"] == http.get(url_b).json()["aggnonce"]
        ctx = m.SessionContext(bytes.fromhex(view["aggnonce"]), keyagg, msg)
        psigs = [m.partial_sign(secnonces[i], by_pk[pk], ctx) for i, pk in enumerate(pubkeys)]
        r = http.post(f"{url_a}/partial-signatures", json={"signer_index": 0,
                                                            "psig": psigs[0].hex()})
        assert r.status_code == 200, r.text
        # A dies mid-session and comes back: nothing of the session was only in its memory.
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        a.communicate(timeout=10)
        a = _serve(url, port_a, tmp_path / "a")
        _wait_http(a, f"{base_a}/v1/health")
        assert http.get(url_a).json()["missing_partial_sigs"] == list(range(1, n))
        for i in range(1, n):
            r = http.post(f"{url_b if i % 2 else url_a}/partial-signatures",
                           json={"signer_index": i, "psig": psigs[i].hex()})
            assert r.status_code == 200, r.text
        done_a, done_b = http.get(url_a).json(), http.get(url_b).json()
        assert done_a == done_b and done_a["state"] == "complete"
        assert schnorr.verify(bytes.fromhex(done_a["signature"]), msg,
                              bytes.fromhex(done_a["output_key"]))
        assert count(engine, "musig_sessions") == 1 and count(engine, "musig_nonces") == n
        assert count(engine, "musig_rejections") == 1  # the conflicting nonce, recorded
    finally:
        http.close()
        _stop(a)
        _stop(b)
        engine.dispose()


def _version(engine: Engine, sid: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT version FROM musig_sessions WHERE id = %(sid)s", {"sid": sid}).scalar_one())
