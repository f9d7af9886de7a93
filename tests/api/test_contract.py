"""The API's OpenAPI document says what the API really answers (api/contract.py): every
response a scenario meets is a documented status of its operation and matches its schema; one
Problem component with every code; Swagger UI served from the installed package."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.contract import SUMMARIES
from api.problem_codes import CODES, NOT_FROM_THE_API
from payouts.service import PoolService
from tests.api.conftest import bearer, register

ROOT = Path(__file__).resolve().parents[2]
CODE_LITERAL = re.compile(
    r'(?:\bcode\s*=\s*|Problem\(\s*\d+,\s*|_unauthorized\(\s*|problem_response\(\s*\d+,\s*)'
    r'"([a-z0-9-]+)"')


def _code_literals() -> dict[str, str]:
    found: dict[str, str] = {}
    for base in ("payouts", "api"):
        for path in (ROOT / base).rglob("*.py"):
            if "cli" in path.relative_to(ROOT).parts:
                continue  # the command line's own codes never reach the API
            for code in CODE_LITERAL.findall(path.read_text(encoding="utf-8")):
                found.setdefault(code, str(path.relative_to(ROOT)))
    return found


def test_every_code_in_the_sources_is_documented() -> None:
    literals = _code_literals()
    assert len(literals) > 60  # the scan sees the engine's codes
    missing = {c: where for c, where in literals.items()
               if c not in CODES and c not in NOT_FROM_THE_API}
    assert missing == {}


def test_the_scan_would_see_an_undocumented_code() -> None:
    assert CODE_LITERAL.findall('raise Problem(418, "teapot", "x")') == ["teapot"]


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    d: dict[str, Any] = client.get("/openapi.json").json()
    return d


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_one_problem_component_and_no_fastapi_validation_error(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    problem = schemas["Problem"]
    assert set(problem["properties"]["code"]["enum"]) == set(CODES)
    for member in ("row", "key", "errors", "retry_after", "column", "required_scope"):
        assert member in problem["properties"]
    for path, method, op in _operations(doc):
        for status, resp in op["responses"].items():
            if int(status) >= 400:
                content = resp["content"]
                assert list(content) == ["application/problem+json"], (path, method, status)
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"}


def test_bodies_document_400_413_and_422(doc: dict[str, Any]) -> None:
    for path, method, op in _operations(doc):
        if "requestBody" in op:
            assert {"400", "413", "422"} <= set(op["responses"]), (path, method)
        if op.get("parameters"):
            assert "422" in op["responses"], (path, method)


def test_every_operation_has_a_written_summary(doc: dict[str, Any]) -> None:
    ops = {(m, p): op for p, m, op in _operations(doc)}
    assert set(ops) == set(SUMMARIES)
    for key, op in ops.items():
        assert op["summary"] == SUMMARIES[key]
    assert ops[("get", "/v1/miners/{account}/payouts/{block_id}/exit-path")]["summary"] \
        != "Exit Path Of"


def test_docs_load_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"(src|href)=['\"]?https?://", page.text), page.text
    assert "cdn" not in page.text.lower()


def test_swagger_ui_assets_are_served_here(client: TestClient) -> None:
    pytest.importorskip("swagger_ui_bundle")
    page = client.get("/docs").text
    for asset in re.findall(r"(/docs/assets/[\w.-]+)", page):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset


# -- every response a scenario meets matches the document ------------------------------------


@pytest.fixture
def checked(client: TestClient, doc: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``checked(method, url, path_template, **kw)``: the request's response, after checking
    that its status is documented for the operation and its body matches the schema."""
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(doc)
    seen: set[tuple[str, str, int]] = set()

    def call(method: str, url: str, template: str, **kw: Any) -> Any:
        r = client.request(method, url, **kw)
        documented = doc["paths"][template][method.lower()]["responses"]
        assert str(r.status_code) in documented, (method, url, r.status_code, r.text)
        schema[template][method.upper()].validate_response(r)
        seen.add((method, template, r.status_code))
        return r

    yield call
    assert len(seen) >= 30  # the scenario below met that many (operation, status) pairs


def test_responses_match_the_document(checked: Callable[..., Any], token: Callable[..., str],
                                      client: TestClient, service: PoolService) -> None:
    ops = bearer(token("admin"))
    read_only = bearer(token("read"))
    checked("GET", "/v1/health", "/v1/health")
    checked("GET", "/v1/distribution", "/v1/distribution")  # 404 no-distribution
    checked("GET", "/v1/distributions/current", "/v1/distributions/current")  # 401
    checked("GET", "/v1/distributions/current", "/v1/distributions/current", headers=ops)
    checked("POST", "/v1/distributions", "/v1/distributions",
            content=b"{not json", headers={**ops, "content-type": "application/json"})  # 400
    checked("POST", "/v1/distributions", "/v1/distributions", json={"estimated_revenue": 1},
            headers=read_only)  # 403
    checked("POST", "/v1/shares", "/v1/shares", content=b"x" * (3 * 1024 * 1024),
            headers={**ops, "content-type": "application/json"})  # 413
    register(client, "alice", bytes.fromhex("01" * 32))
    shares = {"key": ["a-1", "a-2"], "account": ["alice", "alice"], "worker": ["w", "w"],
              "difficulty": [65536, 65536], "job_id": ["j", "j"],
              "revenue": [5_000_000_000] * 2, "time_ms": [1, 2]}
    checked("POST", "/v1/shares", "/v1/shares", json=shares, headers=ops)
    checked("POST", "/v1/shares", "/v1/shares", json={**shares, "account": ["alice", "bob"]},
            headers=ops)  # 422 unknown-miner with row and key
    checked("POST", "/v1/shares", "/v1/shares", json={**shares, "difficulty": [True, 1]},
            headers=ops)  # 422 invalid-request with errors
    checked("POST", "/v1/distributions", "/v1/distributions",
            json={"estimated_revenue": 5_000_000_000}, headers=ops)
    checked("GET", "/v1/distributions/current", "/v1/distributions/current", headers=ops)
    checked("GET", "/v1/distribution", "/v1/distribution")
    checked("GET", "/v1/ledger", "/v1/ledger", headers=ops)
    checked("GET", "/v1/window", "/v1/window", headers=ops)
    checked("GET", "/v1/blocks", "/v1/blocks", headers=ops)
    checked("GET", "/v1/blocks?status=weird", "/v1/blocks", headers=ops)
    checked("GET", "/v1/config", "/v1/config", headers=ops)
    checked("PUT", "/v1/config", "/v1/config", json={"fee_bps": 100}, headers=ops)
    checked("PUT", "/v1/config", "/v1/config", json={"fee_bps": -1}, headers=ops)
    for suffix in ("", "/balance", "/ledger", "/shares", "/payouts"):
        template = "/v1/miners/{account}" + suffix
        checked("GET", "/v1/miners/alice" + suffix, template)
        checked("GET", "/v1/miners/nobody" + suffix, template)  # 404
        checked("GET", "/v1/miners/%00" + suffix, template)  # 422: no NUL reaches the store
    exit_path = "/v1/miners/{account}/payouts/{block_id}/exit-path"
    checked("GET", "/v1/miners/alice/payouts/1/exit-path", exit_path)  # 404 unknown block
    checked("GET", "/v1/miners/alice/payouts/9223372036854775808/exit-path", exit_path)  # 422
    checked("POST", "/v1/miners/challenges", "/v1/miners/challenges",
            json={"account": "bob", "address": "bc1qnotregtest"})  # 422
    checked("POST", "/v1/miners/challenges", "/v1/miners/challenges",
            json={"account": "alice", "address": client.get("/v1/miners/alice")
                  .json()["address"]})  # 409 duplicate-key
    checked("POST", "/v1/miners", "/v1/miners",
            json={"account": "bob", "address": "bcrt1q", "nonce": "0" * 32,
                  "signature": "x"})  # 404 unknown-challenge
    checked("POST", "/v1/miners/alice/address", "/v1/miners/{account}/address",
            json={"nonce": "0" * 32, "new_signature": "x", "current_signature": "y"})
    checked("GET", "/v1/settlements", "/v1/settlements", headers=ops)
    checked("GET", "/v1/settlements/1", "/v1/settlements/{block_id}", headers=ops)  # 404
    checked("POST", "/v1/settlements/1/broadcast", "/v1/settlements/{block_id}/broadcast",
            headers=ops)
    checked("POST", "/v1/musig2/sessions", "/v1/musig2/sessions", json={}, headers=ops)
    checked("GET", "/v1/musig2/sessions/nope", "/v1/musig2/sessions/{session_id}")  # 404


def test_rate_limited_answers_match_the_document(service: PoolService,
                                                 doc: dict[str, Any]) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(doc)
    with TestClient(create_app(service, rate_limit=0.001, rate_burst=1)) as c:
        c.get("/v1/miners/alice")
        r = c.get("/v1/miners/alice")
    assert r.status_code == 429 and r.json()["retry_after"] >= 1
    assert "429" in doc["paths"]["/v1/miners/{account}"]["get"]["responses"]
    schema["/v1/miners/{account}"]["GET"].validate_response(r)
