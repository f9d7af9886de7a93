"""The balance read's fast path (api.fast_reads, issue #17) answers exactly as the route does:
same bytes and headers, same rate limit (one token per request), same problems, the access
log and metrics under the route's template, and every ledger change seen at once."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.fast_reads import BalanceReads
from payouts.service import PoolService
from payouts.store.ledger import LedgerCredit, append_ledger_entries
from tests.api.conftest import assert_problem, register

ALICE = bytes.fromhex("01" * 32)


def _without_fast_path(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not BalanceReads]
    return app


@pytest.fixture
def both(service: PoolService) -> Iterator[tuple[TestClient, TestClient]]:
    with TestClient(create_app(service, rate_limit=None)) as fast, \
            TestClient(_without_fast_path(create_app(service, rate_limit=None))) as route:
        yield fast, route


def test_same_answers_as_the_route(both: tuple[TestClient, TestClient],
                                   service: PoolService) -> None:
    fast, route = both
    register(fast, "alice", ALICE)
    miner_id = service.miner_id("alice")
    for path, status in [("/v1/miners/alice/balance", 200), ("/v1/miners/nobody/balance", 404),
                         ("/v1/miners/bad%20name/balance", 422),
                         ("/v1/miners/alice/balance?x=1", 200)]:
        a, b = fast.get(path), route.get(path)
        assert a.status_code == b.status_code == status, (path, a.text)
        assert a.content == b.content, path
        assert a.headers["content-type"] == b.headers["content-type"]
        assert a.headers["content-length"] == b.headers["content-length"]
    assert fast.get("/v1/miners/alice/balance").json()["owed_sats"] == 0
    # No cache: a ledger line written behind the API's back is in the next answer.
    append_ledger_entries(service.engine, [LedgerCredit(miner_id, 1234, "test")])
    assert fast.get("/v1/miners/alice/balance").json()["owed_sats"] == 1234
    assert fast.get("/v1/miners/alice/balance").content == \
        route.get("/v1/miners/alice/balance").content
    # Other methods still reach the route (405, as before).
    assert fast.post("/v1/miners/alice/balance").status_code == 405


def test_rate_limit_takes_one_token_per_request(service: PoolService) -> None:
    with TestClient(create_app(service, rate_limit=0.001, rate_burst=4)) as c:
        register(c, "alice", ALICE)  # challenge + registration: 2 tokens
        assert c.get("/v1/miners/alice/balance").status_code == 200  # 3rd token
        # An unknown account goes on to the route for its 404: still one token (the 4th).
        assert_problem(c.get("/v1/miners/nobody/balance"), 404, "unknown-miner")
        r = c.get("/v1/miners/alice/balance")
        body = assert_problem(r, 429, "rate-limited")
        assert int(r.headers["retry-after"]) == body["retry_after"] >= 1


def test_access_log_and_metrics_name_the_route(client: TestClient,
                                               caplog: pytest.LogCaptureFixture) -> None:
    register(client, "alice", ALICE)
    with caplog.at_level(logging.INFO, logger="payouts.api.access"):
        assert client.get("/v1/miners/alice/balance").status_code == 200
    (line,) = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "payouts.api.access"]
    assert line["route"] == "/v1/miners/{account}/balance" and line["status"] == 200
    metrics = client.get("/metrics").text
    assert 'route="/v1/miners/{account}/balance",status="200"' in metrics
