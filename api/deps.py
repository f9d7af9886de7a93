"""What a route depends on, as FastAPI dependencies: the pool service, the settlement runner
(when the server runs one), and the distribution publisher. ``create_app`` puts them on
``app.state``; routes take them as ``ServiceDep`` / ``RunnerDep`` / ``PublisherDep`` parameters
and never reach further than these objects' public methods."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from api.problems import Problem
from payouts.distribution.fitting import FittedDistribution
from payouts.service import PoolService
from payouts.settlement.runner import SettlementRunner


class DistributionPublisher(Protocol):
    """Who publishes a distribution for ``POST /v1/distributions``: the service alone (no JD
    server), or :class:`payouts.served.ServedPool`, which also pushes it to JD clients."""

    def publish_distribution(self, estimated_revenue: int) -> FittedDistribution: ...


def get_service(request: Request) -> PoolService:
    svc: PoolService = request.app.state.service
    return svc


def get_runner(request: Request) -> SettlementRunner:
    """The settlement runner, or 503 ``settlement-not-running``."""
    runner: SettlementRunner | None = request.app.state.runner
    if runner is None:
        raise Problem(503, "settlement-not-running",
                      "this server runs no settlement lifecycle (payouts serve does)")
    return runner


def get_optional_runner(request: Request) -> SettlementRunner | None:
    runner: SettlementRunner | None = request.app.state.runner
    return runner


def get_publisher(request: Request) -> DistributionPublisher:
    publisher: DistributionPublisher = request.app.state.publisher
    return publisher


ServiceDep = Annotated[PoolService, Depends(get_service)]
RunnerDep = Annotated[SettlementRunner, Depends(get_runner)]
OptionalRunnerDep = Annotated[SettlementRunner | None, Depends(get_optional_runner)]
PublisherDep = Annotated[DistributionPublisher, Depends(get_publisher)]

__all__ = [
    "DistributionPublisher",
    "OptionalRunnerDep",
    "PublisherDep",
    "RunnerDep",
    "ServiceDep",
    "get_optional_runner",
    "get_publisher",
    "get_runner",
    "get_service",
]
