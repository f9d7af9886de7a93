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

Declarations are counted by the JD server itself (``JobDeclarationServer.stats``: keys
``declare-accepted`` and ``declare-rejected:<code>``); ``payouts serve`` registers that dict
with :func:`add_declaration_source` and a custom collector reads it at scrape time, so the JD
server needs no knowledge of Prometheus. Settlement states come from the settlement runner's
view of the store (:func:`payouts.settlement.runner.settlement_states`).
"""

from __future__ import annotations

import threading
from collections import Counter as _Counter
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from payouts.service import PoolService
from payouts.settlement.runner import settlement_states

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
DeclarationSource = Callable[[], Mapping[str, int]]
_ACCEPTED = "declare-accepted"
_REJECTED = "declare-rejected:"


class _Declarations(Collector):
    """``payouts_declarations_total{result,reason}``: counts recorded here plus, at scrape
    time, those of every registered JD server's ``stats`` dict."""

    def __init__(self) -> None:
        self.sources: list[DeclarationSource] = []
        self.own: _Counter[tuple[str, str]] = _Counter()
        self.lock = threading.Lock()

    def collect(self) -> Iterator[CounterMetricFamily]:
        totals: _Counter[tuple[str, str]] = _Counter()
        with self.lock:
            totals.update(self.own)
            sources = list(self.sources)
        for source in sources:
            for key, n in dict(source()).items():  # a copy: the JDS may count meanwhile
                if key == _ACCEPTED:
                    totals["accepted", "ok"] += n
                elif key.startswith(_REJECTED):
                    totals["rejected", key[len(_REJECTED):]] += n
        family = CounterMetricFamily(
            "payouts_declarations", "DeclareMiningJob checks by the JD server",
            labels=["result", "reason"],
        )
        for (result, reason), n in sorted(totals.items()):
            family.add_metric([result, reason], n)
        yield family


DECLARATIONS = _Declarations()
REGISTRY.register(DECLARATIONS)
SETTLEMENTS = Gauge(
    "payouts_settlements",
    "Blocks by settlement state (the block's status; broadcasting: mature, payout txs out)",
    ["state"], registry=REGISTRY,
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
    """Count one DeclareMiningJob verdict: ``reason`` is the error code of a rejection (e.g.
    ``payout-mismatch``), ``"ok"`` for an acceptance. (A JD server registered with
    :func:`add_declaration_source` is counted from its own stats instead.)"""
    with DECLARATIONS.lock:
        DECLARATIONS.own["accepted" if accepted else "rejected", reason] += 1


def add_declaration_source(source: DeclarationSource) -> Callable[[], None]:
    """Count a JD server's declarations from ``source()`` (its ``stats`` dict: keys
    ``declare-accepted`` and ``declare-rejected:<code>``) at every scrape. Returns the function
    that unregisters it (call it when that server stops)."""
    with DECLARATIONS.lock:
        DECLARATIONS.sources.append(source)

    def remove() -> None:
        with DECLARATIONS.lock:
            if source in DECLARATIONS.sources:
                DECLARATIONS.sources.remove(source)

    return remove


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
    for state, n in settlement_states(service.engine).items():
        SETTLEMENTS.labels(state).set(n)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
