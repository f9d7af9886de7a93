"""Prometheus metrics. Counters are process-wide (one registry, ``REGISTRY``), so other
components — the JD server in particular — can increment them through the functions here
without holding the app; gauges about the window and settlements are read from the service when
``/metrics`` is scraped.

Names: ``payouts_shares_ingested_total``, ``payouts_share_batches_total``,
``payouts_window_shares``, ``payouts_window_total_weight``,
``payouts_distributions_published_total``,
``payouts_declarations_total{result,reason}``, ``payouts_settlements{state}``,
``payouts_http_requests_total{method,route,status}``,
``payouts_http_request_duration_seconds{method,route}``.
"""

from __future__ import annotations

from collections import Counter as _Counter

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from payouts.service import PoolService
from payouts.store.ledger import list_blocks
from payouts.store.models import BLOCK_STATUSES

REGISTRY = CollectorRegistry(auto_describe=True)

SHARES_INGESTED = Counter(
    "payouts_shares_ingested", "Shares accepted into the share log (duplicates excluded)",
    registry=REGISTRY,
)
SHARES_DUPLICATE = Counter(
    "payouts_shares_duplicate", "Shares re-sent with a known key (idempotent no-ops)",
    registry=REGISTRY,
)
SHARE_BATCHES = Counter("payouts_share_batches", "Share batches acknowledged", registry=REGISTRY)
WINDOW_SHARES = Gauge("payouts_window_shares", "Shares in the current window", registry=REGISTRY)
# Weights exceed 2^53; the gauge is a float approximation for dashboards, GET /v1/window is exact.
WINDOW_WEIGHT = Gauge(
    "payouts_window_total_weight", "Total weight of the current window (approximate float)",
    registry=REGISTRY,
)
DISTRIBUTIONS = Counter(
    "payouts_distributions_published", "Distributions published", registry=REGISTRY
)
DECLARATIONS = Counter(
    "payouts_declarations", "DeclareMiningJob checks by the JD server",
    ["result", "reason"], registry=REGISTRY,
)
SETTLEMENTS = Gauge(
    "payouts_settlements", "Blocks by settlement state", ["state"], registry=REGISTRY
)
HTTP_REQUESTS = Counter(
    "payouts_http_requests", "HTTP requests", ["method", "route", "status"], registry=REGISTRY
)
HTTP_DURATION = Histogram(
    "payouts_http_request_duration_seconds", "HTTP request duration", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)


def record_declaration(accepted: bool, reason: str = "ok") -> None:
    """Count one DeclareMiningJob verdict (for the JDS): ``reason`` is the error code of a
    rejection (e.g. ``payout-mismatch``), ``"ok"`` for an acceptance."""
    DECLARATIONS.labels("accepted" if accepted else "rejected", reason).inc()


def record_ingest(accepted: int, duplicates: int) -> None:
    SHARES_INGESTED.inc(accepted)
    SHARES_DUPLICATE.inc(duplicates)
    SHARE_BATCHES.inc()


def record_distribution() -> None:
    DISTRIBUTIONS.inc()


def render(service: PoolService) -> tuple[bytes, str]:
    """Refresh the gauges from ``service`` and render the registry (text format 0.0.4)."""
    acc = service.accountant
    WINDOW_SHARES.set(acc.share_count)
    WINDOW_WEIGHT.set(float(acc.total_weight))
    by_state = _Counter(b.status for b in list_blocks(service.engine))
    for state in BLOCK_STATUSES:
        SETTLEMENTS.labels(state).set(by_state.get(state, 0))
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
