"""Bounded fuzz of every route from ``app.openapi()`` (schemathesis is not installed): random
JSON bodies shaped by each operation's schema (right keys, wrong/odd values) and random path
parameters. Invariant: never a 5xx; every 4xx is problem+json with type/title/status/detail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import store
from api.app import create_app
from payouts.service import PoolService
from payouts.settings import Settings
from tests.api.conftest import p2wpkh_address

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)
HEXISH = st.text(alphabet="0123456789abcdef", min_size=0, max_size=140)


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            schema = (op.get("requestBody", {}).get("content", {})
                      .get("application/json", {}).get("schema", {}))
            ref = schema.get("$ref", "")
            props: list[str] = []
            if ref:
                name = ref.rsplit("/", 1)[-1]
                props = list(spec["components"]["schemas"][name].get("properties", {}))
            ops.append((method.upper(), path, props))
    return ops


@pytest.fixture
def fuzz_client(tmp_path: Path) -> Any:
    # One run on an embedded SQLite store: the routes are backend-agnostic and the store's own
    # tests cover PostgreSQL.
    settings = Settings(
        data_dir=tmp_path / "data",
        network="regtest",
        pool={"payout_address": p2wpkh_address(bytes.fromhex("77" * 32)), "fee_bps": 200},
    )
    service = PoolService(settings)
    app = create_app(service, rate_limit=None)
    secret, _ = store.create_token(service.engine, "fuzz", ["admin"])
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c, _operations(app.openapi())


def test_fuzz_every_route(fuzz_client: Any) -> None:
    client, ops = fuzz_client
    assert len(ops) >= 20

    @settings(max_examples=400, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        method, path, props = data.draw(st.sampled_from(ops))
        url = path
        while "{" in url:
            a, b = url.index("{"), url.index("}")
            seg = data.draw(st.text(alphabet="abcdefxyz0123456789-_.", min_size=1, max_size=20))
            url = url[:a] + seg + url[b + 1:]
        body: Any = None
        if method in ("POST", "PUT"):
            if props and data.draw(st.booleans()):
                body = {p: data.draw(JSON | HEXISH) for p in props
                        if data.draw(st.integers(0, 4)) > 0}
            else:
                body = data.draw(JSON)
        r = client.request(method, url, json=body)
        assert r.status_code < 500, (method, url, body, r.text)
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json"), r.text
            p = r.json()
            assert {"type", "title", "status", "detail"} <= set(p) and p["status"] == r.status_code

    run()
