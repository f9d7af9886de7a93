"""API fixtures: a PoolService on the store fixtures' engines (SQLite and PostgreSQL), the app,
a test client, operator tokens and miners with real keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api import store
from api.app import create_app
from payouts.crypto import bip322
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.tx.address import script_to_address
from payouts.tx.hashes import hash160
from tests.store.conftest import (  # noqa: F401  (fixtures reused by name)
    backend,
    empty_url,
    engine,
    pg_migrated,
    postgres,
)

API_TABLES = ("miner_address_changes", "registration_challenges", "api_tokens")


class Clock:
    """A settable clock for MuSig2 deadlines."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def p2wpkh_address(seckey: bytes) -> str:
    pub = PrivateKey(seckey).public_key.format(compressed=True)
    return script_to_address(b"\x00\x14" + hash160(pub), "regtest")


@pytest.fixture
def api_engine(engine: Engine, backend: str) -> Engine:  # noqa: F811
    """The store fixture's engine with the API tables emptied too (PostgreSQL reuses one
    schema per session)."""
    if backend == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(API_TABLES)} RESTART IDENTITY CASCADE")
    return engine


@pytest.fixture
def service(api_engine: Engine, tmp_path: Path) -> PoolService:
    settings = Settings(
        data_dir=tmp_path / "data",
        network="regtest",
        pool={"payout_address": p2wpkh_address(bytes.fromhex("77" * 32)), "fee_bps": 200},
    )
    return PoolService(settings, engine=api_engine, migrate=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(service: PoolService, clock: Clock) -> Iterator[TestClient]:
    app = create_app(service, rate_limit=None, clock=clock)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def token(service: PoolService) -> Callable[..., str]:
    """Factory: a bearer token with the given scopes (and optional expiry)."""
    counter = iter(range(10_000))

    def make(*scopes: str, expires_in: timedelta | None = None) -> str:
        secret, _ = store.create_token(service.engine, f"t{next(counter)}", list(scopes),
                                       expires_in)
        return secret

    return make


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def register(client: TestClient, account: str, seckey: bytes, **extra: Any) -> dict[str, Any]:
    """Run the real challenge + BIP-322 registration flow for a P2WPKH key."""
    address = p2wpkh_address(seckey)
    r = client.post("/v1/miners/challenges", json={"account": account, "address": address})
    assert r.status_code == 201, r.text
    ch = r.json()
    sig = bip322.sign_simple(seckey, address, ch["message"], "regtest")
    body = {"account": account, "address": address, "nonce": ch["nonce"], "signature": sig,
            **extra}
    r = client.post("/v1/miners", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://payouts.dev/problems/{code}", body
    assert body["status"] == status and body["code"] == code and body["detail"]
    return body
