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


def test_concurrent_reads_share_one_query_each_with_its_answer(
        service: PoolService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group reads (PostgreSQL's path, api.fast_reads.GroupReads): reads that arrive while the
    queries in flight run are answered together by the next query, each with its own
    account's answer (an unknown account gets None), and only from a query that started after
    it arrived. The query itself is the store's (``balances_of``), held back by the test."""
    import asyncio

    from api.fast_reads import GroupReads

    ids = {a: service.register_miner(a, bytes([0x51, 0x20]) + bytes([i + 1]) * 32).id
           for i, a in enumerate(["a", "b", "c"])}
    append_ledger_entries(service.engine, [LedgerCredit(ids["b"], 700, "test")])
    queries: list[list[str]] = []

    async def run() -> list[tuple[bytes, int] | None]:
        gate = asyncio.Event()

        async def held(self: GroupReads, accounts: list[str]) -> dict[str, tuple[bytes, int]]:
            queries.append(sorted(accounts))
            if len(queries) == 1:
                await gate.wait()  # the first query runs while the others arrive
            return service.balances_of(accounts)

        monkeypatch.setattr(GroupReads, "_query", held)
        group = GroupReads(service, in_flight=1)
        first = asyncio.ensure_future(group.get("a"))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(group.get(x)) for x in ("b", "c", "nobody", "b")]
        await asyncio.sleep(0.05)
        assert queries == [["a"]]  # the others wait: one query in flight at a time
        gate.set()
        out = [await first, *[await r for r in rest]]
        group.close()
        return out

    out = asyncio.run(run())
    assert queries == [["a"], ["b", "c", "nobody"]]  # four reads, one query
    assert [None if x is None else x[1] for x in out] == [0, 700, 0, None, 700]


def test_a_failed_group_query_fails_each_read(service: PoolService,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from api.fast_reads import GroupReads

    async def broken(self: GroupReads, accounts: list[str]) -> dict[str, tuple[bytes, int]]:
        raise RuntimeError("database gone")

    monkeypatch.setattr(GroupReads, "_query", broken)

    async def run() -> list[BaseException | tuple[bytes, int] | None]:
        group = GroupReads(service)
        return await asyncio.gather(group.get("x"), group.get("y"), return_exceptions=True)

    out = asyncio.run(run())
    assert len(out) == 2 and all(isinstance(e, RuntimeError) for e in out)


def test_group_reads_connections_close_at_shutdown(service: PoolService) -> None:
    """On PostgreSQL the reads' own connections are closed when the server shuts down (the
    lifespan's shutdown), not left to the garbage collector."""
    app = create_app(service, rate_limit=None)
    with TestClient(app) as c:
        register(c, "alice", ALICE)
        assert c.get("/v1/miners/alice/balance").status_code == 200
        fast = _fast_path(app)
        group = fast._group
        pg = service.engine.dialect.name == "postgresql"
        assert (group is not None) == pg
        idle = list(group._idle) if group is not None else []
        assert len(idle) == (1 if pg else 0)
    assert fast._group is None
    assert all(conn.closed for conn in idle)


def _fast_path(app: FastAPI) -> BalanceReads:
    """The app's BalanceReads middleware instance (built with the middleware stack)."""
    node = app.middleware_stack
    while node is not None and not isinstance(node, BalanceReads):
        node = getattr(node, "app", None)
    assert isinstance(node, BalanceReads)
    return node
