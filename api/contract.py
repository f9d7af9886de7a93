"""The API's documented contract: the OpenAPI document says what the API really answers.

- One ``Problem`` component (RFC 9457) for every error: its ``code`` enum lists every code
  (:mod:`api.problem_codes`), with the members the API really adds (``errors`` and ``row`` of a
  request that does not match its schema, ``row``/``key``/``column`` of a refused share batch,
  ``retry_after`` of a 429, ``required_scope``, ``signer_index``...). FastAPI's own
  ``HTTPValidationError`` is gone: a 422 is this problem (``invalid-request``).
- Every operation documents what it can answer: 422 when it takes parameters or a body; 400
  ``malformed-body`` and 413 ``request-too-large`` when it takes a body; the rest as each route
  declares (429 ``rate-limited`` with ``Retry-After`` on the public, rate-limited routes).
- Summaries are written for people (:data:`SUMMARIES`: "A miner's CTV exit path for a block",
  not FastAPI's title-cased function name "Exit Path Of").
- ``/docs`` is Swagger UI from the installed ``swagger-ui-bundle`` package, served by this
  server (no CDN: the page works without internet).

tests/api/test_contract.py checks that every response the API gives matches what this
document says, and ``make fuzz`` runs schemathesis against it (benchmarks/fuzz_api.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from api.problem_codes import CODES
from api.problems import MEDIA_TYPE

PROBLEM_REF = "#/components/schemas/Problem"
DOCS_ASSETS = "/docs/assets"

PROBLEM_COMPONENT: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: every error of this API. `type` is "
    "https://payouts.dev/problems/<code>; `code` is stable across releases.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request's path"},
        "code": {"type": "string", "enum": sorted(CODES),
                 "description": "; ".join(f"`{c}`: {d}" for c, d in sorted(CODES.items()))},
        "errors": {
            "type": "array", "maxItems": 20,
            "description": "invalid-request: each way the request misses its schema",
            "items": {
                "type": "object", "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "row": {"type": "integer", "minimum": 0,
                "description": "the 0-based row of a share batch that was refused"},
        "key": {"type": "string", "description": "that row's idempotency key"},
        "column": {"type": "string", "description": "column-length-mismatch: the column"},
        "retry_after": {"type": "integer", "minimum": 1,
                        "description": "rate-limited: seconds until a request is let through"},
        "required_scope": {"type": "string",
                           "description": "insufficient-scope: the scope the route needs"},
        "signer_index": {"type": "integer", "minimum": 0},
        "mode": {"type": "string"},
        "mature_at_tip": {"type": "integer"},
        "valid_from_height": {"type": "integer"},
    },
    # an engine error's other context (its own names, JSON scalars)
    "additionalProperties": {"type": ["integer", "string"]},
}


#: The summary of each operation (tests/api/test_contract.py requires one for every route).
SUMMARIES: dict[tuple[str, str], str] = {
    ("get", "/v1/health"): "Health: the store and the node",
    ("get", "/metrics"): "Prometheus metrics",
    ("get", "/v1/distribution"): "The distribution JD clients receive (public)",
    ("post", "/v1/miners/challenges"): "Get a challenge to sign",
    ("post", "/v1/miners"): "Register a miner",
    ("post", "/v1/miners/{account}/address"): "Rotate the payout address",
    ("get", "/v1/miners/{account}"): "A miner",
    ("get", "/v1/miners/{account}/balance"): "A miner's owed balance",
    ("get", "/v1/miners/{account}/ledger"): "A miner's ledger lines",
    ("get", "/v1/miners/{account}/shares"): "A miner's shares in the window",
    ("get", "/v1/miners/{account}/payouts"): "A miner's payout history",
    ("get", "/v1/miners/{account}/payouts/{block_id}/exit-path"):
        "A miner's CTV exit path for a block",
    ("post", "/v1/shares"): "Ingest a share batch",
    ("get", "/v1/window"): "The accounting window",
    ("get", "/v1/distributions/current"): "The newest distribution, with fitting details",
    ("post", "/v1/distributions"): "Publish a distribution",
    ("get", "/v1/blocks"): "Found blocks",
    ("get", "/v1/ledger"): "The owed-balance ledger (audit export)",
    ("get", "/v1/config"): "The runtime settings",
    ("put", "/v1/config"): "Change the runtime settings",
    ("post", "/v1/musig2/sessions"): "Open a MuSig2 signing session",
    ("get", "/v1/musig2/sessions/{session_id}"): "A MuSig2 signing session",
    ("post", "/v1/musig2/sessions/{session_id}/nonces"): "Submit a signer's nonce",
    ("post", "/v1/musig2/sessions/{session_id}/partial-signatures"):
        "Submit a signer's partial signature",
    ("get", "/v1/settlements"): "Every settlement",
    ("get", "/v1/settlements/{block_id}"): "A block's settlement",
    ("post", "/v1/settlements/{block_id}/broadcast"): "Broadcast a settlement's transactions",
    ("post", "/v1/settlements/{block_id}/fallback"): "Take the MuSig2 fallback",
}


def problem_response(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}}}
    if retry_after:
        out["headers"] = {"Retry-After": {"description": "seconds to wait",
                                          "schema": {"type": "integer"}}}
    return out


def first_sentence(doc: str | None) -> str | None:
    """The first sentence of a docstring, for a summary."""
    if not doc:
        return None
    text = " ".join(doc.strip().split("\n\n")[0].split())
    head, sep, _ = text.partition(". ")
    return head.rstrip(".:") if sep or text.endswith(".") else text


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with the contract above applied."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = PROBLEM_COMPONENT
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            summary = SUMMARIES.get((method, path)) or first_sentence(op.get("description"))
            if summary:
                op["summary"] = summary
            responses: dict[str, Any] = op.setdefault("responses", {})
            for status, resp in list(responses.items()):
                if status.isdigit() and int(status) >= 400:
                    responses[status] = problem_response(
                        resp.get("description") or "problem details (RFC 9457)",
                        retry_after=status == "429")
            if op.get("parameters") or "requestBody" in op:
                responses["422"] = problem_response(
                    "invalid-request: the parameters or body do not match the schema (errors "
                    "lists each problem), or the engine refused the input (its own code)")
            if "requestBody" in op:
                responses["400"] = problem_response("malformed-body: the body is not JSON (or not "
                                                    "the other content type it says)")
                responses["413"] = problem_response("request-too-large: the body exceeds the "
                                                    "server's limit")
            op["responses"] = dict(sorted(responses.items()))
    return schema


def install(app: FastAPI) -> None:
    """The contract's OpenAPI document, and Swagger UI served here."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    _install_docs(app)


def _install_docs(app: FastAPI) -> None:
    from starlette.staticfiles import StaticFiles

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the page says so instead of loading anything from elsewhere
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if swagger_ui_path is None:
            return HTMLResponse("<p>Swagger UI is not installed (pip package "
                                "swagger-ui-bundle-v2); the API's description is at "
                                "<a href=\"/openapi.json\">/openapi.json</a>.</p>")
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


__all__ = ["PROBLEM_COMPONENT", "document", "first_sentence", "install", "problem_response"]
