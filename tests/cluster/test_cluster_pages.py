"""The miner and operator pages on the members of a cluster (issue 15; docs/deployment.md,
"Pages on every member"): real ``payouts serve`` processes on PostgreSQL, shares posted to two
members over HTTP; every member's pages and their JSON show the same figures as a single
process (``payouts serve``'s app on its own SQLite store) given the same shares."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.cluster.conftest import MINERS, POOL_SCRIPT, Cluster, Member, miner_script, wait_until

pytestmark = pytest.mark.postgres

WORKERS = ["rig-a", "rig-b", "rig-c"]


def _batch(start: int, n: int, now_ms: int) -> dict[str, Any]:
    """Shares of the last 20 minutes (well inside the page's last-hour column), three workers,
    varied difficulty: per-miner and per-worker figures that differ."""
    return {
        "key": [f"p-{start + i}" for i in range(n)],
        "account": [MINERS[(start + i) % len(MINERS)] for i in range(n)],
        "worker": [WORKERS[(start + i) % 7 % 3] for i in range(n)],
        "difficulty": [1000 + 37 * ((start + i) % 11) for i in range(n)],
        "job_id": ["j"] * n, "revenue": [312_500_000] * n,
        "time_ms": [now_ms - 1_200_000 + 3_000 * (start + i) for i in range(n)],
    }


def _attrs(html: str, testid: str, *names: str) -> list[tuple[str, ...]]:
    """The ``names`` attributes of every element with ``data-testid=testid``, in page order."""
    out = []
    for tag in re.findall(rf'<[^>]*data-testid="{testid}"[^>]*>', html):
        out.append(tuple(re.search(rf'{n}="([^"]*)"', tag).group(1)  # type: ignore[union-attr]
                         for n in names))
    return out


def _miner_figures(html: str) -> dict[str, Any]:
    return {
        "share": _attrs(html, "window-share", "data-weight", "data-total"),
        "shares": _attrs(html, "window-shares", "data-value"),
        "hashrate": _attrs(html, "hashrate", "data-value"),
        "owed": _attrs(html, "owed", "data-value"),
        "workers": _attrs(html, "worker", "data-worker", "data-shares", "data-hashrate-1h"),
    }


def _operator_figures(html: str) -> dict[str, Any]:
    diff = re.search(r"difficulty ([0-9,.]+)", html)
    return {
        "shares": _attrs(html, "window-shares", "data-value"),
        "miners": _attrs(html, "window-miners", "data-value"),
        "top": _attrs(html, "top-miner", "data-account", "data-weight"),
        "difficulty": diff.group(1) if diff else None,
    }


class _Single:
    """The single-process answer: ``payouts serve``'s app on its own SQLite store with the same
    miners (same ids) and the same shares, its read index caught up."""

    def __init__(self, tmp: Path, token_holder: list[str]) -> None:
        from api import store
        from api.app import create_app
        from payouts.service import PoolService
        from payouts.settings import Settings

        settings = Settings(database_url=f"sqlite:///{tmp}/single.db", network="regtest",
                            data_dir=tmp / "single",
                            accounting={"scheme": "prop", "pin_difficulty": 1000},
                            pool={"payout_script": POOL_SCRIPT})
        self.service = PoolService(settings)
        for i, a in enumerate(MINERS):
            self.service.register_miner(a, miner_script(i))
        token, _ = store.create_token(self.service.engine, "ops", ["admin"])
        token_holder.append(token)
        self.http = TestClient(create_app(self.service, rate_limit=None))
        self.auth = {"Authorization": f"Bearer {token}"}

    def post_shares(self, body: dict[str, Any]) -> None:
        r = self.http.post("/v1/shares", json=body, headers=self.auth)
        assert r.status_code == 200 and r.json()["accepted"] == len(body["key"]), r.text

    def caught_up(self) -> None:
        from payouts import dashboard_index

        dashboard_index.catch_up(self.service)


def _operator_page(base: str, token: str) -> str:
    with httpx.Client(base_url=base, timeout=30) as http:
        r = http.post("/operator/login", data={"token": token}, follow_redirects=False)
        assert r.status_code == 303, r.text
        page = http.get("/operator")
        assert page.status_code == 200, page.text
        return page.text


def test_pages_on_every_member_show_the_single_process_figures(cluster_node_down: Cluster,
                                                               tmp_path: Path) -> None:
    c = cluster_node_down
    leader = c.start("leader")
    fe = c.start("api")
    tokens: list[str] = []
    single = _Single(tmp_path, tokens)
    now_ms = int(time.time() * 1000)
    # 400 shares, half through the frontend, half through the leader's own API.
    for k, m in enumerate((fe, leader, fe, leader)):
        body = _batch(k * 100, 100, now_ms)
        r = c.post(m, "/v1/shares", body)
        assert r.status_code == 200 and r.json()["accepted"] == 100, r.text
        single.post_shares(body)
    single.caught_up()

    def window(m: Member) -> dict[str, Any] | None:
        r = c.get(m, "/v1/window")
        return r.json() if r.status_code == 200 else None

    wait_until(lambda: (window(fe) or {}).get("share_count") == 400, 20,
               "the frontend reads the leader's view of all 400 shares")
    # The leader folds the shares into the hashrate buckets (its read index, every 2 s idle).
    wait_until(lambda: c.sql("SELECT COALESCE(SUM(shares), 0) FROM worker_hashrate")[0][0]
               == 400, 30, "the leader's read index folded every share")
    assert window(fe) == window(leader) == single.http.get("/v1/window",
                                                           headers=single.auth).json()

    for account in MINERS:
        want = single.http.get(f"/miners/{account}")
        assert want.status_code == 200
        expected = _miner_figures(want.text)
        assert expected["workers"] and int(expected["shares"][0][0]) > 0
        for m in (fe, leader):
            page = httpx.get(f"{m.base}/miners/{account}", timeout=30)
            assert page.status_code == 200, page.text[:2000]
            assert _miner_figures(page.text) == expected, (m.role, account)
            # A member says when the leader read the window (it cannot know if it moved since).
            assert 'data-testid="stats-as-of"' in page.text
            for path in (f"/v1/miners/{account}/shares", f"/v1/miners/{account}/payouts",
                         f"/v1/miners/{account}/balance"):
                assert c.get(m, path).json() == single.http.get(
                    path, headers=single.auth).json(), (m.role, path)
    # The search box finds an account on a member too.
    r = httpx.get(f"{fe.base}/miners", params={"q": "m3"}, follow_redirects=False, timeout=30)
    assert (r.status_code, r.headers["location"]) == (303, "/miners/m3")

    # The operator page: the window in brief (size, miners, heaviest, difficulty) as the
    # single process shows it.
    single.http.post("/operator/login", data={"token": tokens[0]})
    want_op = single.http.get("/operator")
    assert want_op.status_code == 200
    expected_op = _operator_figures(want_op.text)
    assert expected_op["shares"] == [("400",)] and len(expected_op["top"]) == len(MINERS)
    for m in (fe, leader):
        page = _operator_page(m.base, c.token)
        assert _operator_figures(page) == expected_op, m.role
        # The node card: the leader's own chain follower on its process; on the frontend (no
        # node of its own) the leader's, as published with the view. Its node is down here.
        assert _attrs(page, "node-reachable", "data-value") == [("False",)], m.role
    assert leader.proc.poll() is None and fe.proc.poll() is None


def test_pages_on_a_member_before_any_view_say_so(cluster_node_down: Cluster) -> None:
    """With no leader yet, a member's pages answer the problem (503 no-window-yet), not a
    crash: the miner page and the operator page alike."""
    c = cluster_node_down
    fe = c.start("api")
    r = httpx.get(f"{fe.base}/miners/m0", timeout=30)
    assert r.status_code == 503 and "no-window-yet" in r.text
    with httpx.Client(base_url=fe.base, timeout=30) as http:
        http.post("/operator/login", data={"token": c.token})
        r = http.get("/operator")
    assert r.status_code == 503 and "no-window-yet" in r.text



def test_a_member_reads_the_leaders_node_and_template_revenue_from_the_view(
        cluster_node_down: Cluster) -> None:
    """The operator page's node card and pricing on a member come from what the leader
    published with the view (payouts.leader: its chain follower's status, the node's template
    revenue T every 10 s); they read back exactly, and a view without them reads as unknown."""
    from payouts.published_view import LeaderNode, PublishedWindow
    from payouts.store.cluster import publish_view
    from payouts.store.engine import make_engine

    eng = make_engine(cluster_node_down.url)
    try:
        publish_view(eng, 1, {"per_miner": {}})
        assert PublishedWindow(eng).leader_node() == (None, None)
        publish_view(eng, 1, {
            "node": {"reachable": True, "error": "", "tip_height": 812_345,
                     "tip_time": 1_796_000_000, "checked_at": 1_796_000_001.5},
            "template_revenue": 312_512_345})
        assert PublishedWindow(eng).leader_node() == (
            LeaderNode(True, "", 812_345, 1_796_000_000, 1_796_000_001.5), 312_512_345)
    finally:
        eng.dispose()


def _pricing(html: str) -> dict[str, Any]:
    return {
        "distribution": _attrs(html, "distribution", "data-id", "data-payees", "data-revenue"),
        "pool": _attrs(html, "pool-amount", "data-value"),
        "payees": _attrs(html, "payee", "data-account", "data-amount"),
        "node": _attrs(html, "node-reachable", "data-value")
        + _attrs(html, "node-tip", "data-value"),
    }


@pytest.mark.bitcoind
def test_operator_page_on_a_jd_frontend_prices_like_the_leader(cluster: Cluster) -> None:
    """With the node up (bitcoind regtest): a JD frontend's operator page shows the leader's
    node (reachable, tip) and prices the newest distribution at the template revenue the
    leader published, so its payees' amounts and the pool's equal the leader's own page."""
    c = cluster
    leader = c.start("leader")
    fe = c.start("jds", jds=True)
    now_ms = int(time.time() * 1000)
    r = c.post(fe, "/v1/shares", _batch(0, 120, now_ms))
    assert r.status_code == 200 and r.json()["accepted"] == 120, r.text
    wait_until(lambda: (c.get(fe, "/v1/window").json() or {}).get("share_count") == 120, 20,
               "the window has the shares")
    r = c.post(fe, "/v1/distributions", {"estimated_revenue": 5_000_000_000})
    assert r.status_code == 201, r.text
    did = str(r.json()["distribution_id"])

    def priced(m: Member) -> dict[str, Any]:
        return _pricing(_operator_page(m.base, c.token))

    wait_until(lambda: priced(fe)["distribution"][:1] == [(did, "6", "5000000000")], 30,
               "the frontend prices the new distribution at the leader's T")
    on_fe, on_leader = priced(fe), priced(leader)
    assert on_fe == on_leader
    assert on_fe["node"] == [("True",), ("101",)]
    amounts = [int(a) for _acc, a in on_fe["payees"]]
    assert len(amounts) == 6 and all(a > 0 for a in amounts)
    assert sum(amounts) + int(on_fe["pool"][0][0]) == 5_000_000_000
