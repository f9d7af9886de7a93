"""``create_app(service)``: the FastAPI application of the payout engine.

Layers, outermost first: :class:`AccessLogMiddleware` (one JSON log line and the HTTP metrics
per request), :class:`BodyLimitMiddleware` (413 problem above ``max_body_bytes``, checked on
``Content-Length`` and on the bytes actually received), then the routers under ``/v1``, the
problem+json exception handlers, and ``/docs`` + ``/openapi.json`` (:mod:`api.contract`: the
documented contract, Swagger UI served from the installed package). Both middlewares are plain
ASGI (no per-request task or body copy), which matters at thousands of requests per second.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import contract, metrics, problems
from api.deps import DistributionPublisher, SettlementActions
from api.fast_reads import BalanceReads
from api.ratelimit import SCOPE as RATE_LIMIT_SCOPE
from api.routers import miners, musig2, operators, pages, settlements, system
from payouts import __version__
from payouts.chain_follower import NodeStatus
from payouts.ratelimit import rate_limiter
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.musig2.registry import SessionRegistry
from payouts.settlement.runner import SettlementRunner

access_log = logging.getLogger("payouts.api.access")

DEFAULT_MAX_BODY = 2 * 1024 * 1024  # a 10,000-row share batch is ~1 MB of JSON
DEFAULT_RATE = 20.0  # public requests per second per client, sustained
DEFAULT_BURST = 60


def _problem_bytes(status: int, code: str, detail: str, path: str) -> bytes:
    title = code.replace("-", " ").capitalize()
    return json.dumps({"type": problems.type_uri(code), "title": title, "status": status,
                       "detail": detail, "instance": path, "code": code}).encode()


class BodyLimitMiddleware:
    """Reject request bodies larger than ``limit`` bytes with a 413 problem."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await self._reject(send, path)
                    return
        if any(name == b"content-length" for name, _ in scope.get("headers", ())):
            # The server (h11/httptools) delivers exactly Content-Length bytes, checked above.
            await self.app(scope, receive, send)
            return
        # Chunked body: buffer it (at most ``limit`` bytes) before the app sees it, so the
        # refusal is a clean 413 rather than an error halfway through parsing.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(send, path)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, path: str) -> None:
        body = _problem_bytes(413, "request-too-large",
                              f"request body exceeds {self.limit} bytes", path)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", problems.MEDIA_TYPE.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class AccessLogMiddleware:
    """One JSON line per request on ``payouts.api.access`` + request counters/histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            dt = time.perf_counter() - t0
            route = scope.get("route")
            # Label by route template (bounded cardinality), not by the raw path.
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(method, template, str(status)).inc()
            metrics.HTTP_DURATION.labels(method, template).observe(dt)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(json.dumps({
                    "ts": round(time.time(), 3), "method": method, "path": scope.get("path"),
                    "route": template, "status": status, "duration_ms": round(dt * 1000, 3),
                    "client": client[0] if client else None,
                }))


def create_app(
    service: PoolService | Settings,
    *,
    runner: SettlementRunner | None = None,
    publisher: DistributionPublisher | None = None,
    actions: SettlementActions | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    rate_limit: float | None = DEFAULT_RATE,
    rate_burst: int = DEFAULT_BURST,
    clock: Callable[[], float] = time.time,
    node_status: Callable[[], NodeStatus] | None = None,
) -> FastAPI:
    """Build the API around ``service`` (or a service made from ``settings``).

    ``runner``: the settlement runner whose actions and MuSig2 sessions the API serves (None:
    those endpoints answer 503 ``settlement-not-running``). ``publisher``: who publishes for
    ``POST /v1/distributions`` (default: the service; ``payouts serve`` passes its
    :class:`payouts.served.ServedPool`, which also pushes to JD clients). ``actions``: who runs
    the operator's settlement actions (default: ``runner``; a cluster member passes
    :class:`payouts.cluster_frontend.ForwardedSettlementActions`, so its leader's runner acts).

    ``rate_limit=None`` switches per-client limits off (e.g. behind a limiting proxy, or for a
    load test); on PostgreSQL the limit is shared by every process on the database; ``clock`` is
    the time source of MuSig2 deadlines (seconds); ``node_status`` what the chain follower last saw
    of the node (``/v1/health``; None: no node followed).
    """
    svc = service if isinstance(service, PoolService) else PoolService(service)
    app = FastAPI(
        title="Noncustodial payouts API",
        version=__version__,
        description="Miner registration (BIP-322), operator control, MuSig2 signing. "
        "Errors are RFC 9457 problem+json. See docs/api.md.",
        docs_url=None,  # api.contract serves /docs from the installed Swagger UI package
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.service = svc
    app.state.runner = runner
    app.state.actions = actions if actions is not None else runner
    app.state.publisher = publisher if publisher is not None else svc
    # Shared by every process on a PostgreSQL store (payouts.ratelimit.rate_limiter).
    app.state.limiter = (
        rate_limiter(svc.engine, RATE_LIMIT_SCOPE, rate_limit, rate_burst)
        if rate_limit is not None else None
    )
    # MuSig2 sessions live in the store: the settlement runner's (id ``block-<id>``) and the
    # operator-created ones, served by the same endpoints in every process on this database
    # (with or without a runner here).
    app.state.musig_sessions = (
        runner.sessions if runner is not None else SessionRegistry(svc.engine))
    app.state.clock = clock
    app.state.node_status = node_status
    problems.install(app)
    for r in (system.router, miners.router, operators.router, musig2.router, settlements.router,
              pages.router):
        app.include_router(r)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    contract.install(app)
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(BalanceReads)  # inside the access log: logged and counted like the route
    app.add_middleware(AccessLogMiddleware)
    return app




def create_metrics_app(service: PoolService) -> FastAPI:
    """``/metrics`` alone, for ``[metrics] listen`` (its own address, e.g. one only the
    Prometheus network reaches); the API's own ``/metrics`` then answers 404."""
    app = FastAPI(title="payouts metrics", docs_url=None, openapi_url=None, redoc_url=None)
    app.state.service = service
    app.state.metrics_only = True
    problems.install(app)
    app.include_router(system.router)
    return app
