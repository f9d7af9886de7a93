"""Operator endpoints (bearer token with scopes): share ingest, window, distributions, blocks,
ledger export, runtime config.

Share batches are JSON **columnar** (``{"key": [...], "account": [...], ...}``, equal-length
columns, at most 10,000 rows): compact on the wire and mapped straight onto the engine's
columnar :class:`~payouts.accounting.shares.AccountShareBatch`. A 2xx means the batch is committed
(durable); re-sending it returns ``accepted: 0`` (idempotent by ``key``). Any bad row rejects
the whole batch with a 422 problem naming ``row`` (0-based) and ``key``; nothing is written.
The rules are the engine's one share validator (:mod:`payouts.accounting.validate`, through
:meth:`payouts.service.PoolService.ingest_accounts`); the request schema only bounds types and
sizes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api import metrics, share_bodies
from api.auth import (
    AuthFirstRoute,
    scope_admin,
    scope_distributions_write,
    scope_read,
    scope_shares_write,
)
from api.deps import OptionalRunnerDep, PublisherDep, ServiceDep
from api.problems import Problem, problem_responses
from api.schemas import (
    BlockOut,
    ConfigOut,
    ConfigPatch,
    DistributionOut,
    IngestOut,
    LedgerLineOut,
    PublishRequest,
    ShareBatchIn,
    WindowMinerOut,
    WindowOut,
)
from payouts.distribution.stored import fitted_to_json
from payouts.errors import PayoutsError
from payouts.service import IngestResult, PoolService
from payouts.states import BlockStatus

router = APIRouter(prefix="/v1", tags=["operators"], route_class=AuthFirstRoute)
_AUTH = problem_responses(401, 403)


def _share_batch_body() -> dict[str, Any]:
    """The request body of ``POST /v1/shares`` as OpenAPI states it: the route reads its body
    itself (:mod:`api.share_bodies`), so FastAPI cannot derive it from a parameter."""
    schema = ShareBatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"required": True, "content": {
        share_bodies.JSON_TYPE: {"schema": schema},
        share_bodies.ARROW_TYPE: {
            "schema": {"type": "string", "format": "binary"},
            "description": "Apache Arrow IPC stream (ending with its end-of-stream marker) "
            "with the same seven columns by name: key, account, worker, job_id as utf8 "
            "(large_utf8, string_view or dictionary-encoded also taken), difficulty, revenue, "
            "time_ms as any Arrow integer type; no nulls; at most 10,000 rows in all."}}}


@router.post("/shares", response_model=IngestOut,
             responses={**_AUTH, **problem_responses(415, 422)},
             openapi_extra={"requestBody": _share_batch_body()})
async def ingest_shares(request: Request, service: ServiceDep,
                        _: Any = Depends(scope_shares_write)) -> IngestOut:
    """Ingest a columnar share batch (≤ 10,000 rows): durable before the 200, idempotent.

    The body is JSON (``{"key": [...], "account": [...], ...}``) or an Apache Arrow IPC stream
    of the same columns (``Content-Type: application/vnd.apache.arrow.stream``)."""
    body = await request.body()
    result = await run_in_threadpool(_ingest, service, request.headers.get("content-type"),
                                     body)
    return IngestOut(received=result.received, accepted=result.accepted,
                     duplicates=result.duplicates)


def _ingest(service: PoolService, content_type: str | None, body: bytes) -> IngestResult:
    # Decoding runs here too, in the worker thread: a 10,000-row body must not hold the loop.
    batch = share_bodies.decode(content_type, body)
    try:
        result = service.ingest_accounts(batch)
    except PayoutsError as e:
        metrics.record_ingest_rejected(e.code)
        raise
    metrics.record_ingest(result.accepted, result.duplicates)
    return result


@router.get("/window", response_model=WindowOut, responses=_AUTH)
def window(service: ServiceDep, _: Any = Depends(scope_read)) -> WindowOut:
    """The current accounting window: per-miner weights (decimal strings, exact)."""
    w = service.window_view()
    node_d, bits = w.node_difficulty, w.node_bits
    return WindowOut(
        scheme=w.scheme, share_count=w.share_count, total_weight=str(w.total_weight),
        network_difficulty=None if node_d is None else str(node_d),
        network_difficulty_approx=None if node_d is None else float(node_d),
        network_bits=None if bits is None else f"{bits:08x}",
        window_difficulty=str(w.window_difficulty),
        difficulty_pinned=w.difficulty_pinned,
        miners=[WindowMinerOut(account=a, weight=str(x)) for a, x in w.miners],
    )


# Distributions are returned as built (no re-validation of 100,000 payees by the response
# model, which still documents them; tests/api/test_contract.py checks they match it).


@router.get("/distributions/current", response_model=DistributionOut,
            responses={**_AUTH, **problem_responses(404)})
def current_distribution(service: ServiceDep, _: Any = Depends(scope_read)) -> JSONResponse:
    """The newest published distribution: what the JD server pushes (PR #203), plus how it
    was fitted (accounts, earned, owed, dropped). Weights are decimal strings. The public
    ``GET /v1/distribution`` has the pushed part alone, with integer weights."""
    latest = service.latest_distribution()
    if latest is None:
        raise Problem(404, "no-distribution", "no distribution has been published yet")
    return JSONResponse(fitted_to_json(latest))


@router.post("/distributions", status_code=201, response_model=DistributionOut,
             responses=_AUTH)
def publish(body: PublishRequest, publisher: PublisherDep,
            _: Any = Depends(scope_distributions_write)) -> JSONResponse:
    """Fit the current window into a new distribution (strictly increasing id), store it and
    push it to the JD server's clients."""
    fitted = publisher.publish_distribution(body.estimated_revenue)
    metrics.record_distribution()
    return JSONResponse(fitted_to_json(fitted), status_code=201)


@router.get("/blocks", response_model=list[BlockOut], responses=_AUTH)
def blocks(service: ServiceDep,
           status: str | None = Query(None, max_length=32, description="only blocks in this "
                                      f"state: {', '.join(BlockStatus)} (else 422 "
                                      "invalid-input)"),
           _: Any = Depends(scope_read)) -> list[BlockOut]:
    """Every block recorded for settlement, in id order."""
    return [BlockOut.of(b) for b in service.blocks(status)]


@router.get("/ledger", response_model=list[LedgerLineOut], responses=_AUTH)
def ledger(service: ServiceDep, _: Any = Depends(scope_read)) -> JSONResponse:
    """The whole owed-balance ledger in id order (audit export)."""
    return JSONResponse(service.ledger())


def _config(service: PoolService) -> ConfigOut:
    s = service.settings
    return ConfigOut(fee_bps=s.pool.fee_bps, mode=s.distribution.mode,
                     max_outputs_bytes=s.distribution.max_outputs_bytes,
                     max_sigops=s.distribution.max_sigops,
                     ctv_fanout_arity=s.distribution.ctv_fanout_arity,
                     ctv_fee_rate=s.distribution.ctv_fee_rate, network=s.network)


@router.get("/config", response_model=ConfigOut, responses=_AUTH)
def get_config(service: ServiceDep, _: Any = Depends(scope_read)) -> ConfigOut:
    """The runtime settings (pool fee, settlement mode, budgets)."""
    return _config(service)


@router.put("/config", response_model=ConfigOut,
            responses={**_AUTH, **problem_responses(409, 422)})
def put_config(body: ConfigPatch, service: ServiceDep, runner: OptionalRunnerDep,
               _: Any = Depends(scope_admin)) -> ConfigOut:
    """Change pool fee, settlement mode and budgets in memory (validated like the TOML file).

    Not persisted: the TOML file is the source of truth at start; a restart reverts this.
    While a settlement runner runs (``payouts serve``), the settlement mode is fixed: the JD
    server announced it to its clients (0x4003) and checks every coinbase against it, and the
    runner settles every block with it. Changing ``mode`` (or the fan-out parameters in ctv mode)
    is then a 409 ``mode-change-needs-restart`` and nothing changes: edit the file, restart.
    """
    service.update_settings(body.model_dump(exclude_none=True),
                            fixed_mode=runner.mode if runner is not None else None)
    return _config(service)
