"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

``type`` is ``https://payouts.dev/problems/<code>`` where ``<code>`` is the stable kebab-case
code of the engine error (:attr:`payouts.errors.PayoutsError.code`) or of the API check that
failed; ``title`` is a fixed phrase per code, ``detail`` the specific message, ``status`` the
HTTP status. Extension members (``errors``, ``row``, ``signer_index``…) add machine-readable
context.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from payouts.errors import ForwardedError, PayoutsError, ShareRowError
from payouts.settlement.runner import SettlementActionError

PROBLEM_BASE = "https://payouts.dev/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("payouts.api")

# Engine error codes whose HTTP status is not the default 422.
_STATUS_BY_CODE: dict[str, int] = {
    "unknown-miner": 404,
    "unknown-distribution": 404,
    "unknown-block": 404,
    "untracked-block": 404,
    "no-payout-in-block": 404,
    "not-ctv-settlement": 409,
    "exit-path-not-ready": 409,
    "mode-change-needs-restart": 409,
    "duplicate-key": 409,
    "invalid-config": 422,
    "budget-too-small": 422,
    # MuSig2 session errors
    "wrong-state": 409,
    "deadline-passed": 409,
    "duplicate-nonce": 409,
    "duplicate-partial-signature": 409,
    "unknown-signer": 404,
    "unknown-session": 404,  # discarded with its orphaned block while a call was on its way
    # a cluster (docs/deployment.md): only the leader can answer, and none does right now
    "not-leader": 503,
    "no-window-yet": 503,
    "no-leader": 503,
    "stale-leader": 503,
}


def type_uri(code: str) -> str:
    return PROBLEM_BASE + code


class Problem(Exception):
    """An API-level error rendered as problem+json."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def status_for(exc: PayoutsError) -> int:
    """HTTP status of an engine error: an operator action's own (409 unless it says), also
    when a cluster's leader raised it for this frontend (:class:`ForwardedError`); 422 for a
    share batch refused because of a row (the request is bad whatever rule the row broke: an
    unknown account or a repeated key inside the batch is no 404 or 409 of a resource); else
    by code, else 422 (bad input changes nothing)."""
    if isinstance(exc, SettlementActionError):
        return exc.status
    if isinstance(exc, ForwardedError) and exc.status is not None:
        return exc.status  # the leader's error with the status its own API gives it
    if isinstance(exc, ShareRowError):
        return 422
    return _STATUS_BY_CODE.get(exc.code, 422)


def _title(code: str) -> str:
    return code.replace("-", " ").capitalize()


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_uri(code),
        "title": _title(code),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance is not None:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _from_payouts(request: Request, exc: Exception) -> JSONResponse:
    """Every engine error, in one place: its context (``row`` and ``key`` of a refused share
    batch, ``column``, ``signer_index``, ``tip``...) becomes members of the body."""
    assert isinstance(exc, PayoutsError)
    context: dict[str, Any] = dict(exc.context)
    return problem_response(
        status_for(exc), exc.code, exc.message, instance=request.url.path, **context
    )


def _from_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        exc.code,
        exc.detail,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extra,
    )


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {
                "loc": [p if isinstance(p, int | str) else str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
        )
    return out


def _from_validation(request: Request, exc: Exception) -> JSONResponse:
    """422 ``invalid-request`` with each problem in ``errors`` (and the share batch ``row``);
    a body that is not JSON at all is 400 ``malformed-body``."""
    assert isinstance(exc, RequestValidationError)
    errors = _jsonable_errors(exc.errors())
    bad_json = next((e for e in errors if e["type"] == "json_invalid"), None)
    if bad_json is not None:
        return problem_response(400, "malformed-body", f"the body is not JSON: {bad_json['msg']}",
                                instance=request.url.path)
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    # Columnar share batches: a list index inside a column names the row.
    row = next((p for p in first["loc"][2:] if isinstance(p, int)), None)
    return problem_response(
        422,
        "invalid-request",
        f"{where}: {first['msg']}",
        instance=request.url.path,
        errors=errors[:20],
        row=row,
    )


def _from_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {400: "malformed-body", 404: "not-found", 405: "method-not-allowed",
             413: "request-too-large"}
    code = codes.get(exc.status_code, f"http-{exc.status_code}")
    return problem_response(
        exc.status_code,
        code,
        str(exc.detail),
        instance=request.url.path,
        headers=dict(exc.headers or {}),
    )


def _from_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # exc_info from the exception itself: a handler runs outside the ``except`` that caught it,
    # where log.exception would log "NoneType: None"
    log.error("unhandled error on %s %s", request.method, request.url.path,
              exc_info=(type(exc), exc, exc.__traceback__))
    return problem_response(
        500, "internal-error", "internal error; see the server log", instance=request.url.path
    )


def install(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``."""
    app.add_exception_handler(PayoutsError, _from_payouts)
    app.add_exception_handler(Problem, _from_problem)
    app.add_exception_handler(RequestValidationError, _from_validation)
    app.add_exception_handler(StarletteHTTPException, _from_http)
    app.add_exception_handler(Exception, _from_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's problem statuses: each the one ``Problem``
    component (:mod:`api.contract` fills in the rest of the contract)."""
    return {
        s: {"description": "problem details (RFC 9457)",
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for s in statuses
    }
