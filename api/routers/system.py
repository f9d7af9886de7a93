"""System endpoints: health and Prometheus metrics (unversioned, as scrapers expect)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api import metrics
from api.deps import ServiceDep

router = APIRouter(tags=["system"])


@router.get("/v1/health")
def health(service: ServiceDep) -> dict[str, str]:
    """Liveness: the process answers and the store is reachable."""
    service.check_store()
    return {"status": "ok", "network": service.settings.network}


@router.get("/metrics", response_class=Response)
def prometheus(service: ServiceDep) -> Response:
    """Prometheus text exposition."""
    body, content_type = metrics.render(service)
    return Response(body, media_type=content_type)
