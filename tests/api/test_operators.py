"""Operator endpoints and every auth failure (no token, wrong scope, expired, revoked)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api import store
from payouts.service import PoolService
from tests.api.conftest import assert_problem, bearer, register

ALICE = bytes.fromhex("01" * 32)
G = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
BOB = bytes.fromhex("02" * 32)

# (method, path, scope, json body)
ENDPOINTS: list[tuple[str, str, str, Any]] = [
    ("POST", "/v1/shares", "shares:write",
     {"key": [], "account": [], "worker": [], "difficulty": [], "job_id": [], "revenue": [],
      "time_ms": []}),
    ("GET", "/v1/window", "read", None),
    ("GET", "/v1/distributions/current", "read", None),
    ("POST", "/v1/distributions", "distributions:write", {"estimated_revenue": 1000}),
    ("GET", "/v1/blocks", "read", None),
    ("GET", "/v1/ledger", "read", None),
    ("GET", "/v1/config", "read", None),
    ("PUT", "/v1/config", "admin", {"fee_bps": 100}),
    ("POST", "/v1/musig2/sessions", "settlements:write",
     {"sighash": "00" * 32, "pubkeys": [G]}),
    ("GET", "/v1/settlements", "read", None),
    ("GET", "/v1/settlements/1", "read", None),
    ("POST", "/v1/settlements/1/broadcast", "settlements:write", None),
    ("POST", "/v1/settlements/1/fallback", "settlements:write", None),
]


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


def _batch(keys: list[str], accounts: list[str], **over: Any) -> dict[str, Any]:
    n = len(keys)
    body: dict[str, Any] = {
        "key": keys, "account": accounts, "worker": ["rig"] * n, "difficulty": [1000] * n,
        "job_id": ["j1"] * n, "revenue": [312_500_000] * n,
        "time_ms": [1_700_000_000_000 + i * 1000 for i in range(n)],
    }
    body.update(over)
    return body


@pytest.mark.parametrize(("method", "path", "scope", "body"), ENDPOINTS)
def test_every_operator_endpoint_refuses_bad_tokens(
    client: TestClient, token: Callable[..., str], method: str, path: str, scope: str, body: Any,
    service: PoolService,
) -> None:
    def call(headers: dict[str, str]) -> Any:
        return client.request(method, path, json=body, headers=headers)

    r = call({})
    assert_problem(r, 401, "missing-token")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(call(bearer("pt_not-a-token")), 401, "invalid-token")
    other = "read" if scope != "read" else "shares:write"
    assert_problem(call(bearer(token(other))), 403, "insufficient-scope")
    expired = token(scope, expires_in=timedelta(seconds=1))
    with service.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE api_tokens SET expires_at = '2000-01-01 00:00:00'")
    assert_problem(call(bearer(expired)), 401, "token-expired")
    revoked = token(scope)
    name = store.list_tokens(service.engine)[-1].name
    store.revoke_token(service.engine, name)
    assert_problem(call(bearer(revoked)), 401, "token-revoked")
    # The right scope, and admin (which implies every scope), get through auth.
    for good in (token(scope), token("admin")):
        r = call(bearer(good))
        assert r.status_code not in (401, 403), r.text


def test_share_ingest_idempotent_and_durable(client: TestClient, token: Callable[..., str],
                                              service: PoolService) -> None:
    register(client, "alice", ALICE)
    register(client, "bob", BOB)
    h = bearer(token("shares:write"))
    body = _batch([f"s{i}" for i in range(100)], ["alice", "bob"] * 50)
    r = client.post("/v1/shares", json=body, headers=h)
    assert r.json() == {"received": 100, "accepted": 100, "duplicates": 0}
    assert _count(service.engine, "shares") == 100  # committed before the 200
    r = client.post("/v1/shares", json=body, headers=h)
    assert r.json() == {"received": 100, "accepted": 0, "duplicates": 100}
    assert service.accountant.log.__len__() == 100


@pytest.mark.parametrize(("over", "code", "row"), [
    ({"difficulty": [1000, 0, 1000]}, "invalid-request", 1),
    ({"revenue": [1, 2, -3]}, "invalid-request", 2),
    ({"account": ["alice", "alice", "nobody"]}, "unknown-miner", 2),
    ({"key": ["a", "b", "a"]}, "duplicate-key", 2),
    ({"worker": ["w", "w\x00", "w"]}, "invalid-input", 1),
    ({"difficulty": [1, 1.5, 1]}, "invalid-request", 1),
    ({"time_ms": [1, 2]}, "column-length-mismatch", None),
])
def test_bad_rows_reject_the_batch_naming_the_row(
    client: TestClient, token: Callable[..., str], service: PoolService,
    over: dict[str, Any], code: str, row: int | None,
) -> None:
    register(client, "alice", ALICE)
    body = _batch(["a", "b", "c"], ["alice"] * 3, **over)
    r = client.post("/v1/shares", json=body, headers=bearer(token("shares:write")))
    problem = assert_problem(r, 422, code)
    assert problem.get("row") == row
    assert _count(service.engine, "shares") == 0


def test_batch_size_cap(client: TestClient, token: Callable[..., str]) -> None:
    n = 10_001
    body = _batch([f"k{i}" for i in range(n)], ["x"] * n)
    r = client.post("/v1/shares", json=body, headers=bearer(token("shares:write")))
    assert_problem(r, 422, "invalid-request")


def test_window_distribution_blocks_ledger(client: TestClient, token: Callable[..., str],
                                           service: PoolService) -> None:
    register(client, "alice", ALICE)
    register(client, "bob", BOB)
    service.accountant.set_network_difficulty(10**6)
    w = bearer(token("shares:write", "distributions:write", "read"))
    client.post("/v1/shares", json=_batch([f"s{i}" for i in range(4)],
                                          ["alice", "alice", "alice", "bob"]), headers=w)
    win = client.get("/v1/window", headers=w).json()
    assert win["share_count"] == 4
    assert {m["account"] for m in win["miners"]} == {"alice", "bob"}
    assert int(win["total_weight"]) == sum(int(m["weight"]) for m in win["miners"])
    assert_problem(client.get("/v1/distributions/current", headers=w), 404, "no-distribution")
    assert_problem(client.post("/v1/distributions", json={"estimated_revenue": 0}, headers=w),
                   422, "invalid-request")
    pub = client.post("/v1/distributions", json={"estimated_revenue": 312_500_000}, headers=w)
    assert pub.status_code == 201, pub.text
    cur = client.get("/v1/distributions/current", headers=w).json()
    assert cur["distribution_id"] == pub.json()["distribution_id"] == 1
    assert set(cur["accounts"]) == {"alice", "bob"}
    service.record_block(distribution_id=1, revenue=312_500_000, block_hash=b"\x11" * 32,
                         height=200)
    blocks = client.get("/v1/blocks", headers=w).json()
    assert blocks[0]["height"] == 200 and blocks[0]["status"] == "found"
    assert client.get("/v1/blocks?status=paid", headers=w).json() == []
    assert_problem(client.get("/v1/blocks?status=weird", headers=w), 422, "invalid-input")
    assert isinstance(client.get("/v1/ledger", headers=w).json(), list)


def test_config_get_put_validates(client: TestClient, token: Callable[..., str],
                                  service: PoolService) -> None:
    h = bearer(token("admin"))
    assert client.get("/v1/config", headers=h).json()["fee_bps"] == 200
    r = client.put("/v1/config", json={"fee_bps": 150, "mode": "ctv"}, headers=h)
    assert r.json()["fee_bps"] == 150 and r.json()["mode"] == "ctv"
    assert service.settings.pool.fee_bps == 150
    for bad in ({"fee_bps": 10_001}, {"mode": "custodial"}, {"max_outputs_bytes": 1},
                {"unknown": 1}):
        assert_problem(client.put("/v1/config", json=bad, headers=h), 422, "invalid-request")
    assert service.settings.pool.fee_bps == 150 and service.settings.distribution.mode == "ctv"


def test_publish_without_pool_address_is_a_problem(client: TestClient,
                                                   token: Callable[..., str],
                                                   service: PoolService) -> None:
    service.settings.pool.payout_address = None
    r = client.post("/v1/distributions", json={"estimated_revenue": 1000},
                    headers=bearer(token("admin")))
    assert_problem(r, 422, "invalid-config")


def test_window_shows_the_exact_network_difficulty_and_the_pin(
    client: TestClient, token: Callable[..., str], service: PoolService
) -> None:
    """Issue #11: regtest's difficulty (about 4.66e-10) shown exactly, beside the difficulty
    the window really uses (a pin on test networks)."""
    h = bearer(token("read"))
    first = client.get("/v1/window", headers=h).json()
    assert first["network_difficulty"] is None and first["network_bits"] is None
    assert service.window.on_network_bits(0x207FFFFF)
    win = client.get("/v1/window", headers=h).json()
    assert win["network_difficulty"] == "65535/140737471578112"
    assert win["network_difficulty_approx"] == pytest.approx(4.6565423739e-10)
    assert win["network_bits"] == "207fffff" and win["difficulty_pinned"] is False
    assert win["window_difficulty"] == "65535/140737471578112"
    service.settings.accounting.pin_difficulty = 10**6
    assert service.window.on_network_bits(0x2000FFFF)  # a new report re-applies the pin
    win = client.get("/v1/window", headers=h).json()
    assert (win["window_difficulty"], win["difficulty_pinned"]) == ("1000000", True)
    assert win["network_difficulty"] == str(Fraction(0xFFFF << 208, 0xFFFF << 232))
