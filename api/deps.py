"""What a route depends on, as FastAPI dependencies: the pool service, the settlement runner
(when the server runs one), who runs the operator's settlement actions (that runner, or the
leader through a cluster frontend), the distribution publisher, the MuSig2 signing sessions and
the time of the request. ``create_app`` puts them on ``app.state``; routes take them as
``ServiceDep`` / ``RunnerDep`` (``OptionalRunnerDep``) / ``OptionalActionsDep`` /
``PublisherDep`` / ``SessionsDep`` / ``NowDep`` parameters and never reach further than these
objects' public methods."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from api.problems import Problem
from payouts.distribution.fitting import FittedDistribution
from payouts.service import PoolService
from payouts.settlement.musig2.registry import SessionRegistry
from payouts.settlement.runner import ActionReport, SettlementRunner


class DistributionPublisher(Protocol):
    """Who publishes a distribution for ``POST /v1/distributions``: the service alone (no JD
    server), or :class:`payouts.served.ServedPool`, which also pushes it to JD clients."""

    def publish_distribution(self, estimated_revenue: int) -> FittedDistribution: ...


class SettlementActions(Protocol):
    """Who runs the operator's settlement actions for ``POST /v1/settlements/{id}/broadcast``
    and ``/fallback``: the settlement runner of a single process, or, on a cluster member,
    :class:`payouts.cluster_frontend.ForwardedSettlementActions` (the leader's runner acts)."""

    async def broadcast(self, block_id: int) -> ActionReport: ...

    async def fallback(self, block_id: int) -> ActionReport: ...


def get_service(request: Request) -> PoolService:
    svc: PoolService = request.app.state.service
    return svc


def require_runner(runner: SettlementRunner | None) -> SettlementRunner:
    """``runner``, or 503 ``settlement-not-running``. For a route that must answer another
    problem first (an unknown block is 404 whether a runner runs or not), it takes
    ``OptionalRunnerDep`` and calls this after that check."""
    if runner is None:
        raise Problem(503, "settlement-not-running",
                      "this server runs no settlement lifecycle (payouts serve does)")
    return runner


def get_runner(request: Request) -> SettlementRunner:
    """The settlement runner, or 503 ``settlement-not-running``."""
    return require_runner(request.app.state.runner)


def get_optional_runner(request: Request) -> SettlementRunner | None:
    runner: SettlementRunner | None = request.app.state.runner
    return runner


def require_actions(actions: SettlementActions | None) -> SettlementActions:
    """``actions``, or 503 ``settlement-not-running`` (as :func:`require_runner`)."""
    if actions is None:
        raise Problem(503, "settlement-not-running",
                      "this server runs no settlement lifecycle (payouts serve does)")
    return actions


def get_optional_actions(request: Request) -> SettlementActions | None:
    actions: SettlementActions | None = request.app.state.actions
    return actions


def get_publisher(request: Request) -> DistributionPublisher:
    publisher: DistributionPublisher = request.app.state.publisher
    return publisher


def get_sessions(request: Request) -> SessionRegistry:
    """The MuSig2 signing sessions the API serves, in the store: the operator-created ones and
    the settlement runner's (id ``block-<id>``), whichever process opened them."""
    sessions: SessionRegistry = request.app.state.musig_sessions
    return sessions


def get_now(request: Request) -> float:
    """The request's time on the server's clock (seconds; MuSig2 deadlines)."""
    return float(request.app.state.clock())


ServiceDep = Annotated[PoolService, Depends(get_service)]
RunnerDep = Annotated[SettlementRunner, Depends(get_runner)]
OptionalRunnerDep = Annotated[SettlementRunner | None, Depends(get_optional_runner)]
OptionalActionsDep = Annotated[SettlementActions | None, Depends(get_optional_actions)]
PublisherDep = Annotated[DistributionPublisher, Depends(get_publisher)]
SessionsDep = Annotated[SessionRegistry, Depends(get_sessions)]
NowDep = Annotated[float, Depends(get_now)]

__all__ = [
    "DistributionPublisher",
    "NowDep",
    "OptionalActionsDep",
    "OptionalRunnerDep",
    "PublisherDep",
    "RunnerDep",
    "ServiceDep",
    "SessionsDep",
    "SettlementActions",
    "get_now",
    "get_optional_actions",
    "get_optional_runner",
    "get_publisher",
    "get_runner",
    "get_service",
    "get_sessions",
    "require_actions",
    "require_runner",
]
