"""System endpoints: health and Prometheus metrics (unversioned, as scrapers expect)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import metrics
from api.deps import get_service

router = APIRouter(tags=["system"])


@router.get("/v1/health")
def health(request: Request) -> dict[str, str]:
    """Liveness: the process answers and the store is reachable."""
    service = get_service(request)
    with service.engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    return {"status": "ok", "network": service.settings.network}


@router.get("/metrics", response_class=Response)
def prometheus(request: Request) -> Response:
    """Prometheus text exposition."""
    body, content_type = metrics.render(get_service(request))
    return Response(body, media_type=content_type)
