"""System endpoints: health and Prometheus metrics (unversioned, as scrapers expect)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from api import metrics
from api.auth import authenticate, bearer, bearer_secret
from api.deps import ServiceDep
from api.problems import Problem
from payouts.states import Scope

router = APIRouter(tags=["system"])


@router.get("/v1/health")
def health(service: ServiceDep) -> dict[str, str]:
    """Liveness: the process answers and the store is reachable."""
    service.check_store()
    return {"status": "ok", "network": service.settings.network}


@router.get("/metrics", response_class=Response)
def prometheus(request: Request, service: ServiceDep,
               creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Response:
    """Prometheus text exposition. ``[metrics] listen`` moves it to its own address (404
    here); ``[metrics] token_required`` asks for an operator token with scope ``read``."""
    settings = service.settings.metrics
    if settings.listen is not None and not getattr(request.app.state, "metrics_only", False):
        raise Problem(404, "metrics-elsewhere",
                      f"/metrics is served on {settings.listen} ([metrics] listen)")
    if settings.token_required:
        authenticate(service, bearer_secret(creds), Scope.READ)
    body, content_type = metrics.render(service)
    return Response(body, media_type=content_type)
