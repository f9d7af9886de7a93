"""Operator endpoints (bearer token with scopes): share ingest, window, distributions, blocks,
ledger export, runtime config.

Share batches are JSON **columnar** (``{"key": [...], "account": [...], ...}``, equal-length
columns, at most 10,000 rows): compact on the wire and mapped straight onto the engine's
columnar :class:`~payouts.accounting.shares.ShareBatch`. A 2xx means the batch is committed
(durable); re-sending it returns ``accepted: 0`` (idempotent by ``key``). Any bad row rejects
the whole batch with a 422 problem naming ``row`` (0-based) and ``key``; nothing is written.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from api import metrics
from api.auth import (
    scope_admin,
    scope_distributions_write,
    scope_read,
    scope_shares_write,
)
from api.deps import OptionalRunnerDep, PublisherDep, get_service
from api.problems import Problem, problem_responses
from api.schemas import (
    MAX_BATCH,
    BlockOut,
    ConfigOut,
    ConfigPatch,
    IngestOut,
    PublishRequest,
    ShareBatchIn,
    WindowMinerOut,
    WindowOut,
)
from payouts.accounting.shares import ShareBatch
from payouts.errors import ConfigError
from payouts.service import PoolService, fitted_to_json
from payouts.settings import DistributionSettings, PoolSettings
from payouts.store import repositories as repo
from payouts.store.ledger import export_ledger, list_blocks
from payouts.store.models import BLOCK_STATUSES

router = APIRouter(prefix="/v1", tags=["operators"])
_AUTH = problem_responses(401, 403)
_config_lock = threading.Lock()


def _account_ids(request: Request, service: PoolService, accounts: list[str]) -> dict[str, int]:
    """account -> miner id, cached per app (ids never change; miners are never deleted)."""
    cache: dict[str, int] = request.app.state.account_ids
    missing = set(accounts).difference(cache)
    if missing:
        cache.update(repo.miner_ids(service.engine, missing))
    return cache


@router.post("/shares", response_model=IngestOut, responses={**_AUTH, **problem_responses(422)})
def ingest_shares(
    body: ShareBatchIn,
    request: Request,
    _: Any = Depends(scope_shares_write),
) -> IngestOut:
    """Ingest a columnar share batch (≤ 10,000 rows): durable before the 200, idempotent."""
    service = get_service(request)
    n = len(body.key)
    columns: dict[str, list[Any]] = {
        "account": body.account, "worker": body.worker, "difficulty": body.difficulty,
        "job_id": body.job_id, "revenue": body.revenue, "time_ms": body.time_ms}
    for name, col in columns.items():
        if len(col) != n:
            raise Problem(422, "column-length-mismatch",
                          f"column {name} has {len(col)} values, key has {n}", column=name)
    if n > MAX_BATCH:  # pragma: no cover - the schema caps every column already
        raise Problem(422, "batch-too-large", f"at most {MAX_BATCH} rows per batch")
    if len(set(body.key)) != n:
        seen: set[str] = set()
        for i, k in enumerate(body.key):
            if k in seen:
                raise Problem(422, "duplicate-key", f"row {i}: key {k!r} appears twice in the "
                              "batch", row=i, key=k)
            seen.add(k)
    ids = _account_ids(request, service, body.account)
    try:
        miner_id = np.fromiter((ids[a] for a in body.account), dtype=np.int64, count=n)
    except KeyError:
        i = next(i for i, a in enumerate(body.account) if a not in ids)
        raise Problem(422, "unknown-miner", f"row {i}: account {body.account[i]!r} is not "
                      "registered", row=i, key=body.key[i]) from None
    for name, col in (("key", body.key), ("worker", body.worker), ("job_id", body.job_id)):
        if "\x00" in "".join(col):
            i = next(i for i, v in enumerate(col) if "\x00" in v)
            raise Problem(422, "invalid-input", f"row {i}: {name} contains a NUL character",
                          row=i, key=body.key[i])
    batch = ShareBatch(
        key=body.key, miner_id=miner_id, worker=body.worker,
        difficulty=np.asarray(body.difficulty, dtype=np.int64), job_id=body.job_id,
        revenue=np.asarray(body.revenue, dtype=np.int64),
        time_ms=np.asarray(body.time_ms, dtype=np.int64),
    )
    result = service.ingest(batch)
    metrics.record_ingest(result.accepted, result.duplicates)
    return IngestOut(received=result.received, accepted=result.accepted,
                     duplicates=result.duplicates)


@router.get("/window", response_model=WindowOut, responses=_AUTH)
def window(request: Request, _: Any = Depends(scope_read)) -> WindowOut:
    """The current accounting window: per-miner weights (decimal strings, exact)."""
    service = get_service(request)
    acc = service.accountant
    w = acc.weights()
    ids = w.miner_ids.tolist()
    miners = repo.get_miners(service.engine, ids)
    node_d, bits = service.window.node_difficulty, service.window.node_bits
    return WindowOut(
        scheme=service.settings.accounting.scheme, share_count=acc.share_count,
        total_weight=str(acc.total_weight),
        network_difficulty=None if node_d is None else str(node_d),
        network_difficulty_approx=None if node_d is None else float(node_d),
        network_bits=None if bits is None else f"{bits:08x}",
        window_difficulty=str(acc.network_difficulty),
        difficulty_pinned=service.settings.accounting.pin_difficulty is not None,
        miners=[WindowMinerOut(account=miners[i].account, weight=str(x))
                for i, x in zip(ids, w.weights, strict=True)],
    )


@router.get("/distributions/current", responses={**_AUTH, **problem_responses(404)})
def current_distribution(request: Request,
                         _: Any = Depends(scope_read)) -> dict[str, Any]:
    """The newest published distribution (the JSON the JDS pushes, plus fitting details)."""
    service = get_service(request)
    last = repo.last_distribution_id(service.engine)
    if last is None:
        raise Problem(404, "no-distribution", "no distribution has been published yet")
    return fitted_to_json(service.distribution(last))


@router.post("/distributions", status_code=201,
             responses={**_AUTH, **problem_responses(422)})
def publish(body: PublishRequest, publisher: PublisherDep,
            _: Any = Depends(scope_distributions_write)) -> dict[str, Any]:
    """Fit the current window into a new distribution (strictly increasing id), store it and
    push it to the JD server's clients."""
    fitted = publisher.publish_distribution(body.estimated_revenue)
    metrics.record_distribution()
    return fitted_to_json(fitted)


@router.get("/blocks", response_model=list[BlockOut], responses={**_AUTH, **problem_responses(422)})
def blocks(request: Request, status: str | None = Query(None, description="filter by state"),
           _: Any = Depends(scope_read)) -> list[BlockOut]:
    if status is not None and status not in BLOCK_STATUSES:
        raise Problem(422, "invalid-input", f"status must be one of {list(BLOCK_STATUSES)}")
    service = get_service(request)
    return [
        BlockOut(id=b.id, height=b.height, block_hash=b.block_hash[::-1].hex(),
                 distribution_id=b.distribution_id, revenue=b.revenue, status=b.status,
                 created_at=b.created_at)
        for b in list_blocks(service.engine, status)
    ]


@router.get("/ledger", responses=_AUTH)
def ledger(request: Request, _: Any = Depends(scope_read)) -> list[dict[str, Any]]:
    """The whole owed-balance ledger in id order (audit export)."""
    return export_ledger(get_service(request).engine)


def _config(service: PoolService) -> ConfigOut:
    s = service.settings
    return ConfigOut(fee_bps=s.pool.fee_bps, mode=s.distribution.mode,
                     max_outputs_bytes=s.distribution.max_outputs_bytes,
                     max_sigops=s.distribution.max_sigops,
                     ctv_fanout_arity=s.distribution.ctv_fanout_arity,
                     ctv_fee_rate=s.distribution.ctv_fee_rate, network=s.network)


@router.get("/config", response_model=ConfigOut, responses=_AUTH)
def get_config(request: Request, _: Any = Depends(scope_read)) -> ConfigOut:
    return _config(get_service(request))


@router.put("/config", response_model=ConfigOut,
            responses={**_AUTH, **problem_responses(409, 422)})
def put_config(body: ConfigPatch, request: Request, runner: OptionalRunnerDep,
               _: Any = Depends(scope_admin)) -> ConfigOut:
    """Change pool fee, settlement mode and budgets in memory (validated like the TOML file).

    Not persisted: the TOML file is the source of truth at start; a restart reverts this.
    While a settlement runner runs (``payouts serve``), the settlement mode is fixed: the JD
    server announced it to its clients (0x4003) and checks every coinbase against it, and the
    runner settles every block with it. Changing ``mode`` (or the fan-out parameters in ctv mode)
    is then a 409 ``mode-change-needs-restart`` and nothing changes: edit the file, restart.
    """
    service = get_service(request)
    patch = body.model_dump(exclude_none=True)
    with _config_lock:
        s = service.settings
        pool = PoolSettings.model_validate(
            {**s.pool.model_dump(), **{k: v for k, v in patch.items() if k == "fee_bps"}}
        )
        dist = DistributionSettings.model_validate(
            {**s.distribution.model_dump(), **{k: v for k, v in patch.items() if k != "fee_bps"}}
        )
        running = runner.mode if runner is not None else None
        if running is not None and (dist.mode != running.name or (
                dist.mode == "ctv" and dist.ctv_params() != running.ctv)):
            raise Problem(409, "mode-change-needs-restart",
                          f"this server settles in {running.name} mode (announced to JD clients "
                          "and used for every recorded block); change [distribution] in the "
                          "settings file and restart", mode=running.name)
        if dist.mode == "musig2" and s.settlement.musig2 is None:
            raise ConfigError("distribution.mode = musig2 needs a [settlement.musig2] table "
                              "(committee, fallback_key, ...) in the settings file")
        s.pool, s.distribution = pool, dist  # both validated before either is replaced
    return _config(service)
