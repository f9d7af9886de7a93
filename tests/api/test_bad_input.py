"""No 500 from bad input (issue #13): NUL bytes and int64 overflows in path parameters, share
columns that are not numbers, malformed bodies from anyone, unfinished headers; what the API
logs when something does fail; challenges that do not pile up; the node in /v1/health."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api import store
from api.app import create_app
from api.http_server import uvicorn_config
from payouts.chain_follower import NodeStatus
from payouts.distribution.amounts import compute_outputs
from payouts.service import PoolService
from payouts.store.api_models import RegistrationChallenge
from tests.api.conftest import assert_problem, bearer, p2wpkh_address, register

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("suffix", ["", "/balance", "/ledger", "/shares", "/payouts"])
def test_a_nul_in_the_account_is_422_on_every_backend(client: TestClient, suffix: str) -> None:
    body = assert_problem(client.get(f"/v1/miners/%00{suffix}"), 422, "invalid-request")
    assert body["errors"][0]["loc"] == ["path", "account"]
    r = client.post("/v1/miners/a%00b/address",
                    json={"nonce": "0" * 32, "new_signature": "x", "current_signature": "y"})
    assert_problem(r, 422, "invalid-request")


@pytest.mark.parametrize("block_id", ["9223372036854775808", "0", "-1", "1e3"])
def test_integer_path_parameters_are_bounded(client: TestClient, block_id: str) -> None:
    register(client, "alice", bytes.fromhex("01" * 32))
    r = client.get(f"/v1/miners/alice/payouts/{block_id}/exit-path")
    assert_problem(r, 422, "invalid-request")


def test_every_integer_parameter_has_bounds(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p["schema"].get("type") == "integer":
                    assert "minimum" in p["schema"] and "maximum" in p["schema"], (method, path)


@pytest.mark.parametrize("column", ["difficulty", "revenue", "time_ms"])
@pytest.mark.parametrize("value", [True, "100", 1.5])
def test_share_columns_take_numbers_only(client: TestClient, token: Callable[..., str],
                                         column: str, value: object) -> None:
    register(client, "alice", bytes.fromhex("01" * 32))
    batch: dict[str, list[object]] = {
        "key": ["k1"], "account": ["alice"], "worker": ["w"], "difficulty": [65536],
        "job_id": ["j"], "revenue": [5_000_000_000], "time_ms": [1]}
    batch[column] = [value]
    r = client.post("/v1/shares", json=batch, headers=bearer(token("shares:write")))
    body = assert_problem(r, 422, "invalid-request")
    assert body["row"] == 0 and body["errors"][0]["loc"][:2] == ["body", column]


def test_the_token_is_checked_before_the_body_is_read(client: TestClient,
                                                      token: Callable[..., str]) -> None:
    junk = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    assert_problem(client.post("/v1/shares", **junk), 401, "missing-token")  # type: ignore[arg-type]
    assert_problem(client.post("/v1/distributions", **junk), 401, "missing-token")  # type: ignore[arg-type]
    reader = bearer(token("read"))
    r = client.post("/v1/shares", content=b"{not json",
                    headers={**reader, "content-type": "application/json"})
    assert_problem(r, 403, "insufficient-scope")
    writer = bearer(token("shares:write"))
    r = client.post("/v1/shares", content=b"{not json",
                    headers={**writer, "content-type": "application/json"})
    assert_problem(r, 400, "malformed-body")


def test_an_unexpected_error_is_logged_with_its_traceback(
        service: PoolService, token: Callable[..., str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("a bug in the window view")

    monkeypatch.setattr(service, "window_view", broken)
    with TestClient(create_app(service, rate_limit=None), raise_server_exceptions=False) as c, \
            caplog.at_level(logging.ERROR, logger="payouts.api"):
        r = c.get("/v1/window", headers=bearer(token("read")))
    assert_problem(r, 500, "internal-error")
    (record,) = [x for x in caplog.records if x.name == "payouts.api"]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    text = logging.Formatter().formatException(record.exc_info)
    assert "a bug in the window view" in text and "NoneType: None" not in text


def test_expired_challenges_are_deleted(client: TestClient, service: PoolService) -> None:
    old = store.create_challenge(service.engine, "register", "alice",
                                 p2wpkh_address(bytes.fromhex("01" * 32)), timedelta(seconds=-1))
    assert store.get_challenge(service.engine, old.nonce) is not None
    r = client.post("/v1/miners/challenges",
                    json={"account": "bob", "address": p2wpkh_address(bytes.fromhex("02" * 32))})
    assert r.status_code == 201
    assert store.get_challenge(service.engine, old.nonce) is None
    with service.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(RegistrationChallenge)).scalar_one()
    assert n == 1


def test_health_reports_an_unreachable_node(service: PoolService) -> None:
    status = NodeStatus(reachable=True, tip_height=7, tip_hash=b"\x01" * 32, checked_at=1.0)
    with TestClient(create_app(service, rate_limit=None, node_status=lambda: status)) as c:
        ok = c.get("/v1/health").json()
        assert ok == {"status": "ok", "network": "regtest"}
        status = NodeStatus(reachable=False, error="cannot reach bitcoind at http://x: refused",
                            tip_height=7, tip_hash=b"\x01" * 32, checked_at=1.0)
        down = c.get("/v1/health")
    assert down.status_code == 200
    body = down.json()
    assert body["status"] == "degraded" and body["node"]["reachable"] is False
    assert "cannot reach bitcoind" in body["node"]["error"]
    assert body["node"]["tip_height"] == 7 and body["node"]["tip_hash"] == "01" * 32


def test_the_public_distribution_pipes_into_the_cli(client: TestClient,
                                                    token: Callable[..., str],
                                                    service: PoolService,
                                                    tmp_path: Path) -> None:
    """What a JD client receives, fetched by anyone without a token, is exactly what
    ``payouts distribution amounts`` reads: its outputs are the engine's for that revenue."""
    register(client, "alice", bytes.fromhex("01" * 32))
    register(client, "bob", bytes.fromhex("02" * 32))
    ops = bearer(token("admin"))
    shares = {"key": ["a", "b", "c"], "account": ["alice", "bob", "bob"],
              "worker": ["w"] * 3, "difficulty": [65536, 65536, 131072], "job_id": ["j"] * 3,
              "revenue": [5_000_000_000] * 3, "time_ms": [1, 2, 3]}
    assert client.post("/v1/shares", json=shares, headers=ops).status_code == 200
    pub = client.post("/v1/distributions", json={"estimated_revenue": 5_000_000_000},
                      headers=ops)
    assert pub.status_code == 201
    public = client.get("/v1/distribution")
    assert public.status_code == 200 and "accounts" not in public.json()
    revenue = 3_125_000_000
    proc = subprocess.run(
        [sys.executable, "-m", "payouts", "distribution", "amounts", "-", "-T", str(revenue)],
        input=public.text, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["outputs"]
    fitted = service.latest_distribution()
    assert fitted is not None
    want = [{"script": o.script.hex(), "amount": o.value}
            for o in compute_outputs(fitted.distribution, revenue).outputs]
    assert got == want and len(got) >= 2  # the pool and at least one miner
    assert sum(o["amount"] for o in got) == revenue


# -- the header deadline ------------------------------------------------------------------


@pytest.fixture
def http_server(service: PoolService) -> Iterator[tuple[str, int]]:
    """The API over real HTTP (uvicorn with the serve command's config), header deadline
    0.5 s, on a free port; stopped at the end."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(create_app(service, rate_limit=None), "127.0.0.1",
                                           port, log_level="warning", header_timeout=0.5))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def _closed_after(sock: socket.socket, drip: bytes, every: float, limit: float) -> float:
    """Send ``drip`` every ``every`` s until the server closes; seconds it took."""
    t0 = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - t0 < limit:
        try:
            sock.sendall(drip)
            if sock.recv(1024) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    return float("inf")


def test_unfinished_headers_are_cut_off(http_server: tuple[str, int]) -> None:
    with socket.create_connection(http_server) as slow:
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        took = _closed_after(slow, b"X-a: b\r\n", 0.1, 5.0)
    assert 0.4 <= took < 2.0
    # an honest request on another connection is served
    with socket.create_connection(http_server, timeout=5) as ok:
        ok.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := ok.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")


def test_a_slow_request_after_a_fast_one_is_cut_off_too(http_server: tuple[str, int]) -> None:
    with socket.create_connection(http_server, timeout=5) as conn:
        conn.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET /v1/health HTTP/1.1\r\n")
        took = _closed_after(conn, b"X-a: b\r\n", 0.1, 5.0)
    assert took < 2.0
