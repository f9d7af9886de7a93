"""System endpoints: health and Prometheus metrics (unversioned, as scrapers expect), and the
public distribution."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from api import metrics
from api.auth import authenticate
from api.deps import ServiceDep
from api.problems import Problem, problem_responses
from api.ratelimit import rate_limited
from api.schemas import HealthOut, NodeHealthOut, WireDistributionOut
from payouts.distribution.jsonio import distribution_to_json
from payouts.states import Scope
from payouts.tx.hashes import display_hex

router = APIRouter(tags=["system"])


@router.get("/v1/health", response_model=HealthOut, responses=problem_responses(503))
def health(request: Request, service: ServiceDep) -> JSONResponse:
    """Liveness and the node: 200 while the process and the store answer. ``status`` is ``ok``,
    or ``degraded`` when the node cannot be reached (shares are still taken; blocks and
    settlements wait for it), and then ``node`` says what the chain follower last saw. 503
    ``store-unreachable`` when the store does not answer."""
    try:
        service.check_store()
    except Exception as e:  # whatever the driver raises: the store does not answer
        raise Problem(503, "store-unreachable", f"the store does not answer: {e}") from None
    out = HealthOut(status="ok", network=service.settings.network)
    follower = request.app.state.node_status
    st = follower() if follower is not None else None
    if st is not None and st.reachable is False:
        out.status = "degraded"
        out.node = NodeHealthOut(
            reachable=st.reachable, error=st.error or None, tip_height=st.tip_height,
            tip_hash=None if st.tip_hash is None else display_hex(st.tip_hash),
            checked_at=st.checked_at)
    # a healthy answer is the two fields scripts and load balancers read; node only when due
    return JSONResponse(out.model_dump(mode="json", exclude={"node"} if out.node is None
                                       else set()))


@router.get("/metrics", response_class=Response)
def prometheus(request: Request, service: ServiceDep) -> Response:
    """Prometheus text exposition. ``[metrics] listen`` moves it to its own address (404
    here); ``[metrics] token_required`` asks for an operator token with scope ``read``."""
    settings = service.settings.metrics
    if settings.listen is not None and not getattr(request.app.state, "metrics_only", False):
        raise Problem(404, "metrics-elsewhere",
                      f"/metrics is served on {settings.listen} ([metrics] listen)")
    if settings.token_required:
        authenticate(request, Scope.READ)
    body, content_type = metrics.render(service)
    return Response(body, media_type=content_type)


@router.get("/v1/distribution", response_model=WireDistributionOut,
            responses=problem_responses(404, 429), dependencies=[Depends(rate_limited)])
def public_distribution(service: ServiceDep) -> JSONResponse:
    """The newest distribution as every JD client receives it (sv2-spec PR #203
    SetPayoutDistribution): public, since any JD client gets it anyway, and in the format
    ``payouts distribution amounts`` reads, so anyone can recompute a coinbase's amounts:
    ``curl .../v1/distribution | payouts distribution amounts - -T <revenue>``."""
    latest = service.latest_distribution()
    if latest is None:
        raise Problem(404, "no-distribution", "no distribution has been published yet")
    return JSONResponse(distribution_to_json(latest.distribution))
