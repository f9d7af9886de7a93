"""The pages without a browser (SQLite and PostgreSQL): figures against the JSON API, the
search box, the operator's cookie session and its CSRF check, escaping of what miners send,
the CTV exit path and its download, the dashboard index against the slow path, and the
/metrics settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api import metrics
from api.app import create_app, create_metrics_app
from payouts import dashboard_index
from payouts.accounting.shares import ShareBatch
from payouts.chain_follower import NodeStatus
from payouts.node.kernel import KernelNode
from payouts.node.kernel_chain import KernelChain
from payouts.service import PoolService
from payouts.settlement.ctv import CtvParams
from payouts.settlement.modes import SettlementMode
from payouts.store import dashboard
from payouts.store.dashboard_models import BUCKET_MS
from tests.api.conftest import Clock
from tests.api.settle_helpers import find_block
from tests.jds.helpers import setup_chain

NOW_MS = 1_000_000 * 1000  # the Clock fixture's time


def attr(html: str, testid: str, name: str = "data-value") -> str:
    m = re.search(rf'data-testid="{testid}"[^>]*?{name}="([^"]*)"', html)
    assert m is not None, f"{testid} {name} not in page"
    return m.group(1)


def worker_shares(service: PoolService, account: str, rows: list[tuple[str, int, int]],
                  tag: str) -> None:
    """``rows``: (worker, difficulty, time_ms) of ``account``'s shares."""
    n = len(rows)
    service.ingest(ShareBatch(
        key=[f"{tag}{i}" for i in range(n)],
        miner_id=np.full(n, service.miner_id(account), dtype=np.int64),
        worker=[r[0] for r in rows], difficulty=np.array([r[1] for r in rows], dtype=np.int64),
        job_id=["j"] * n, revenue=np.full(n, 312_500_000, dtype=np.int64),
        time_ms=np.array([r[2] for r in rows], dtype=np.int64)))


@pytest.fixture
def chain() -> KernelChain:
    c = KernelChain()
    setup_chain(c)
    return c


def test_miner_page_figures_equal_the_api_and_the_index_equals_the_slow_path(
        service: PoolService, chain: KernelChain, clock: Clock) -> None:
    node = KernelNode(chain)
    found = find_block(service, node, SettlementMode("coinbase"))
    app = create_app(service, runner=found.runner, rate_limit=None, clock=clock)
    http = TestClient(app)
    worker_shares(service, "m1", [("rig-a", 1000, NOW_MS - 5 * 60_000),
                                  ("rig-a", 3000, NOW_MS - 4 * 60_000),
                                  ("rig-b", 7000, NOW_MS - 3 * 3_600_000)], "w")
    # Before the index runs, the page reads the block the slow way; after, from the index.
    slow = http.get("/miners/m1").text
    dashboard_index.catch_up(service)
    assert dashboard.unindexed_block_ids(service.engine) == []
    page = http.get("/miners/m1").text
    for html in (slow, page):
        (b,) = http.get("/v1/miners/m1/payouts").json()["blocks"]
        assert attr(html, "payout", "data-block-id") == str(b["id"])
        assert attr(html, "payout", "data-amount") == str(b["paid_sats"])
        assert attr(html, "payout", "data-txid") == b["payout_txid"]
        assert attr(html, "payout", "data-vout") == str(b["payout_vout"])
    shares = http.get("/v1/miners/m1/shares").json()
    assert attr(page, "window-shares") == str(shares["miner_shares"])
    assert attr(page, "hashrate") == str(shares["hashrate_hs"])
    assert attr(page, "owed") == str(http.get("/v1/miners/m1/balance").json()["owed_sats"])
    # Per worker: the fold counted each share once, in its own ten-minute bucket.
    assert attr(page, "worker", "data-worker") == "rig-a"
    rows = dict(re.findall(r'data-worker="([^"]+)" data-shares="(\d+)"', page))
    assert rows == {"rig-a": "2", "rig-b": "1"}
    hour = dict(re.findall(r'data-worker="([^"]+)" data-shares="\d+" data-hashrate-1h="(\d+)"',
                           page))
    assert hour == {"rig-a": str(4000 * 2**32 // 3600), "rig-b": "0"}
    buckets = dashboard.miner_buckets(service.engine, service.miner_id("m1"), 0)
    assert all(b.bucket_ms % BUCKET_MS == 0 for b in buckets)
    assert sum(b.shares for b in buckets if b.worker != "w") == 3
    # Folding again counts nothing twice.
    assert dashboard_index.fold_new_shares(service) == 0
    assert dashboard.miner_buckets(service.engine, service.miner_id("m1"), 0) == buckets
    # The chart's data is in the page, for the script; the figures need none.
    assert '<script type="application/json" id="chart-data">' in page
    assert "default-src 'self'" in http.get("/miners/m1").headers["content-security-policy"]


def test_search_by_account_address_and_nothing(service: PoolService, chain: KernelChain
                                               ) -> None:
    find_block(service, KernelNode(chain), SettlementMode("coinbase"))
    http = TestClient(create_app(service, rate_limit=None))
    r = http.get("/miners", params={"q": "m2"}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/miners/m2")
    address = http.get("/v1/miners/m3").json()["address"]
    r = http.get("/miners", params={"q": address}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/miners/m3")
    r = http.get("/miners", params={"q": "nobody"})
    assert r.status_code == 404 and "no miner account" in r.text
    r = http.get("/miners/nobody")
    assert r.status_code == 404 and "unknown-miner" in r.text
    assert http.get("/miners/m1", params={"span": "1y"}).status_code == 422


def test_worker_names_are_escaped_in_html_and_in_the_chart_data(service: PoolService,
                                                                clock: Clock) -> None:
    service.register_miner("m0", b"\x00\x14" + b"\x01" * 20)
    evil = "</script><script>alert(1)</script>"
    worker_shares(service, "m0", [(evil, 1000, NOW_MS - 60_000)], "x")
    dashboard_index.catch_up(service)
    page = TestClient(create_app(service, rate_limit=None, clock=clock)).get("/miners/m0").text
    assert "<script>alert(1)" not in page
    assert "\\u003c/script\\u003e" in page and "&lt;/script&gt;" in page


def test_operator_session_cookie_csrf_and_scopes(service: PoolService,
                                                 token: Callable[..., str]) -> None:
    http = TestClient(create_app(service, rate_limit=None), base_url="https://pool.example")
    r = http.get("/operator", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/operator/login")
    assert http.post("/operator/login", data={"token": "pt_nope"}).status_code == 401
    reader = token("read")
    r = http.post("/operator/login", data={"token": reader}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    for part in ("HttpOnly", "SameSite=strict", "Path=/operator", "Secure"):
        assert part in cookie
    page = http.get("/operator")
    assert page.status_code == 200 and "Distribution" in page.text
    # A settlement action needs settlements:write and the form's token.
    r = http.post("/operator/settlements/1/broadcast", data={"csrf": "x"})
    assert r.status_code == 403 and "settlements:write" in r.text
    admin = token("admin")
    http.post("/operator/login", data={"token": admin})
    r = http.post("/operator/settlements/1/broadcast", data={"csrf": "forged"})
    assert r.status_code == 403 and "csrf-mismatch" in r.text
    from api.routers.pages import csrf_token

    r = http.post("/operator/settlements/1/broadcast", data={"csrf": csrf_token(admin)},
                  follow_redirects=False)
    assert r.status_code == 303 and "refused" in r.headers["location"]
    # Revoking the token ends the session at the next request; signing out clears it.
    from api import store

    assert http.get("/operator").status_code == 200
    (name,) = [t.name for t in store.list_tokens(service.engine) if "admin" in t.scopes]
    store.revoke_token(service.engine, name)
    r = http.get("/operator")
    assert r.status_code == 401 and "token-revoked" in r.text
    http.post("/operator/logout")
    assert http.get("/operator", follow_redirects=False).status_code == 303


def test_ctv_exit_path_page_and_download_equal_the_api(service: PoolService,
                                                       chain: KernelChain) -> None:
    mode = SettlementMode("ctv", CtvParams(arity=2, fee_rate=1))
    found = find_block(service, KernelNode(chain), mode, n=5)
    dashboard_index.catch_up(service)
    http = TestClient(create_app(service, runner=found.runner, rate_limit=None))
    api = http.get(f"/v1/miners/m1/payouts/{found.block_id}/exit-path").json()
    page = http.get("/miners/m1").text
    assert attr(page, "payout", "data-amount") == str(api["output"]["amount"])
    assert attr(page, "payout", "data-txid") == api["output"]["txid"]
    assert f"exit path: {len(api['transactions'])} tx" in page
    exit_page = http.get(f"/miners/m1/exit/{found.block_id}").text
    assert attr(exit_page, "exit-amount") == str(api["output"]["amount"])
    assert exit_page.count('data-testid="exit-tx"') == len(api["transactions"])
    assert attr(exit_page, "exit-pending") == str(sum(
        t["status"] == "planned" for t in api["transactions"]))
    r = http.get(f"/miners/m1/exit/{found.block_id}.txt")
    assert "attachment" in r.headers["content-disposition"]
    assert r.text.split() == [t["raw"] for t in api["transactions"]]
    assert http.get("/miners/m1/exit/999").status_code == 404


def test_metrics_node_servers_and_settings(service: PoolService,
                                           token: Callable[..., str]) -> None:
    class Server:
        connections, pending_connections = 3, 1
        stats: ClassVar[dict[str, int]] = {"connections": 7, "declare-accepted": 2}

    status = NodeStatus(True, "", 150, b"\x00" * 32, 1_700_000_000, 1_700_000_100.0)
    remove_node = metrics.set_node_source(lambda: status)
    remove_server = metrics.add_server("mining", Server())
    try:
        text = TestClient(create_app(service, rate_limit=None)).get("/metrics").text
    finally:
        remove_node()
        remove_server()
    assert 'payouts_sv2_connections{role="mining"} 3.0' in text
    assert 'payouts_sv2_handshakes_in_progress{role="mining"} 1.0' in text
    assert 'payouts_sv2_events_total{event="connections",role="mining"} 7.0' in text
    assert "payouts_node_reachable 1.0" in text and "payouts_node_tip_height 150.0" in text
    assert "payouts_node_tip_age_seconds" in text
    assert 'payouts_settlement_oldest_age_seconds{state="found"} 0.0' in text
    # Unregistered: gone.
    after = TestClient(create_app(service, rate_limit=None)).get("/metrics").text
    assert 'role="mining"' not in after and "payouts_node_reachable" not in after
    # A token, when required.
    service.settings.metrics.token_required = True
    http = TestClient(create_app(service, rate_limit=None))
    assert http.get("/metrics").status_code == 401
    assert http.get("/metrics", headers={"Authorization": f"Bearer {token('read')}"}
                    ).status_code == 200
    # Its own address: the API's /metrics is 404, the metrics app serves it.
    service.settings.metrics.token_required = False
    service.settings.metrics.listen = "127.0.0.1:9108"
    assert http.get("/metrics").status_code == 404
    assert "payouts_window_shares" in TestClient(create_metrics_app(service)).get(
        "/metrics").text


def test_the_grafana_dashboard_graphs_only_metrics_the_engine_exports(
        service: PoolService) -> None:
    """docs/grafana-dashboard.json: every metric its queries name is one /metrics exports
    (with the JD and Mining Protocol servers and the node registered) or a documented
    counter of the Mining Protocol server's own collector."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json")
                     .read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]

    class Server:
        connections, pending_connections = 0, 0
        stats: ClassVar[dict[str, int]] = {"declare-accepted": 1}

    removers = [metrics.set_node_source(lambda: NodeStatus(True, "", 1, b"", 1, 1.0)),
                metrics.add_server("jd", Server()),
                metrics.add_declaration_source(lambda: {"declare-accepted": 1})]
    metrics.record_ingest_rejected("invalid-share")
    try:
        http = TestClient(create_app(service, rate_limit=None))
        http.get("/v1/health")
        text = http.get("/metrics").text
    finally:
        for remove in removers:
            remove()
    exported = set(re.findall(r"^([a-z0-9_]+?)(?:\{| )", text, re.M))
    named = {m for e in exprs for m in re.findall(r"\b(payouts_[a-z0-9_]+)", e)}
    # The Mining Protocol server's shares come with its branch (payouts_mining_shares_total).
    missing = named - exported - {"payouts_mining_shares_total"}
    assert not missing, missing
    assert len(named) >= 15


def test_refused_share_batches_are_counted_by_reason(service: PoolService,
                                                     token: Callable[..., str]) -> None:
    http = TestClient(create_app(service, rate_limit=None))
    name = 'payouts_share_batches_rejected_total{reason="unknown-miner"}'

    def count() -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", http.get("/metrics").text, re.M)
        return float(m.group(1)) if m else 0.0

    before = count()
    r = http.post("/v1/shares", headers={"Authorization": f"Bearer {token('shares:write')}"},
                  json={"key": ["k"], "account": ["nobody"], "worker": ["w"],
                        "difficulty": [1], "job_id": ["j"], "revenue": [1], "time_ms": [1]})
    assert (r.status_code, r.json()["code"]) == (422, "unknown-miner")
    assert count() == before + 1


def test_musig2_payout_shows_its_signing_session_and_the_operator_its_buttons(
        service: PoolService, token: Callable[..., str]) -> None:
    from payouts.settlement.lifecycle_rules import first_mature_tip
    from tests.api.settle_helpers import fallback_signer, musig2_mode
    from tests.lifecycle.helpers import mine_to

    with KernelNode() as node:
        f = find_block(service, node, SettlementMode("musig2", musig2=musig2_mode(4)),
                       signer=fallback_signer())
        with TestClient(create_app(service, runner=f.runner, rate_limit=None)) as http:
            mine_to(node, first_mature_tip(f.height))
            http.portal.call(f.runner.poll_once)  # type: ignore[union-attr]
            dashboard_index.catch_up(service)
            session = http.get(f"/v1/musig2/sessions/block-{f.block_id}").json()
            page = http.get("/miners/m2").text
            assert attr(page, "signing", "data-state") == session["state"] == (
                "collecting-nonces")
            assert f"nonces missing {len(session['missing_nonces'])}/4" in page
            assert f'href="/v1/musig2/sessions/block-{f.block_id}"' in page
            assert attr(page, "payout", "data-txid") == ""  # lands in the spend, once sent
            http.post("/operator/login", data={"token": token("admin")})
            op = http.get("/operator").text
            assert 'data-testid="action-broadcast"' in op
            assert 'data-testid="action-fallback"' in op
            # The fallback button runs the runner's action: locked by BIP-68, refused, shown.
            from api.routers.pages import csrf_token

            admin = http.cookies.get("payouts_operator")
            assert admin is not None
            r = http.post(f"/operator/settlements/{f.block_id}/fallback",
                          data={"csrf": csrf_token(admin)})
            assert r.status_code == 200 and "fallback-locked" in r.text


def test_the_window_snapshot_equals_the_live_figures_of_every_miner() -> None:
    """payouts.dashboards.take_window_stats (one bincount pass for all miners, difficulty in
    21-bit digits) gives exactly what Accountant.miner_stats gives miner by miner, for
    difficulties up to 2^52 (the validator's bound)."""
    from payouts.accounting.accountant import Accountant
    from payouts.dashboards import take_window_stats
    from payouts.settings import AccountingSettings

    rng = np.random.default_rng(16)
    acc = Accountant(AccountingSettings(scheme="pplns", pplns_n=3_000),
                     network_difficulty=10**6)
    for b in range(3):
        n = 1_500
        diff = rng.integers(1, 2**52, n, dtype=np.int64)
        diff[:10] = 2**52  # the largest allowed
        acc.ingest(ShareBatch(
            key=[f"{b}-{i}" for i in range(n)],
            miner_id=rng.integers(1, 40, n, dtype=np.int64), worker=["w"] * n,
            difficulty=diff, job_id=["j"] * n, revenue=np.full(n, 10**8, dtype=np.int64),
            time_ms=rng.integers(0, 10**9, n, dtype=np.int64)))
    snap = take_window_stats(acc)
    for miner_id in range(0, 41):
        assert snap.stats(miner_id) == acc.miner_stats(miner_id), miner_id
