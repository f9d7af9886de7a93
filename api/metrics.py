"""Prometheus metrics. Counters are process-wide (one registry, ``REGISTRY``), so other
components — the JD server in particular — can increment them through the functions here
without holding the app; gauges about the window and settlements are read from the service when
``/metrics`` is scraped.

Names: ``payouts_shares_ingested_total``, ``payouts_share_batches_total``,
``payouts_window_shares``, ``payouts_window_total_weight``,
``payouts_distributions_published_total``,
``payouts_declarations_total{result,reason}``, ``payouts_settlements{state}``,
``payouts_http_requests_total{method,route,status}``,
``payouts_http_request_duration_seconds{method,route}``; and, from what ``payouts serve``
registers (:func:`add_server`, :func:`set_node_source`): ``payouts_sv2_connections{role}``,
``payouts_sv2_handshakes_in_progress{role}``, ``payouts_sv2_events_total{role,event}``
(the Mining Protocol server's share outcomes are its ``shares-accepted`` and
``share-rejected:<code>`` events), ``payouts_sv2_channels{role}``,
``payouts_node_reachable``, ``payouts_node_tip_height``, ``payouts_node_tip_age_seconds``,
``payouts_node_answer_age_seconds``; from the store at scrape time:
``payouts_settlement_oldest_age_seconds{state}``, ``payouts_window_miners``,
``payouts_share_batches_rejected_total{reason}`` (the API's refusals, by problem code).

Declarations are counted by the JD server itself (``JobDeclarationServer.stats``: keys
``declare-accepted`` and ``declare-rejected:<code>``); ``payouts serve`` registers that dict
with :func:`add_declaration_source` and a custom collector reads it at scrape time, so the JD
server needs no knowledge of Prometheus. Settlement states come from the settlement runner's
view of the store (:func:`payouts.settlement.runner.settlement_states`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter as _Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from payouts.errors import PayoutsError
from payouts.service import PoolService
from payouts.settlement.runner import settlement_states
from payouts.store.leader_lease import read_lease

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
    try:
        w = service.window_view()  # a cluster frontend: the view the leader published
    except PayoutsError:  # none published yet: the gauges keep their last values
        pass
    else:
        WINDOW_SHARES.set(w.share_count)
        WINDOW_WEIGHT.set(float(w.total_weight))
        WINDOW_MINERS.set(len(w.miners))
    for k, v in lease_gauges(service.engine).items():
        LEADER_LEASE.labels(k).set(v)
    for state, n in settlement_states(service.engine).items():
        SETTLEMENTS.labels(state).set(n)
    now = datetime.now(UTC)
    oldest: dict[str, float] = {}
    for b in service.blocks():
        if b.status in _OPEN_STATES:
            age = (now - b.created_at.replace(tzinfo=b.created_at.tzinfo or UTC)).total_seconds()
            oldest[b.status] = max(oldest.get(b.status, 0.0), age)
    for state in _OPEN_STATES:
        SETTLEMENT_AGE.labels(state).set(oldest.get(state, 0.0))
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


LEADER_LEASE = Gauge("payouts_leader_lease", "The cluster's leader lease: epoch (elections "
                     "so far) and since (unix time of the last election)", ["field"],
                     registry=REGISTRY)


def lease_gauges(engine: Engine) -> dict[str, float]:
    """``epoch`` and ``since`` of the leader lease (docs/deployment.md); none on a store
    without the table (older schema)."""
    try:
        lease = read_lease(engine)
    except Exception:
        return {}
    return {"epoch": float(lease.epoch),
            "since": lease.since.timestamp() if lease.since is not None else 0.0}


# -- what payouts serve registers: SV2 servers, the node (issue #16) ---------------------------

WINDOW_MINERS = Gauge("payouts_window_miners", "Miners with weight in the current window",
                      registry=REGISTRY)
_OPEN_STATES = ("found", "confirmed", "mature")
SETTLEMENT_AGE = Gauge(
    "payouts_settlement_oldest_age_seconds",
    "Age of the oldest block still in each unfinished state (0: none), since it was recorded",
    ["state"], registry=REGISTRY,
)
SHARE_BATCHES_REJECTED = Counter(
    "payouts_share_batches_rejected", "Share batches the API refused, by problem code",
    ["reason"], registry=REGISTRY,
)


def record_ingest_rejected(reason: str) -> None:
    SHARE_BATCHES_REJECTED.labels(reason).inc()


class ServerLike(Protocol):
    """What a registered SV2 server shows (:class:`sv2.listener.NoiseListener` has it)."""

    @property
    def connections(self) -> int: ...

    @property
    def pending_connections(self) -> int: ...

    @property
    def stats(self) -> Mapping[str, int]: ...


class NodeStatusLike(Protocol):
    """What the node source gives (:class:`payouts.chain_follower.NodeStatus` is one)."""

    reachable: bool | None
    error: str
    tip_height: int | None
    tip_time: int | None
    checked_at: float | None


class _Sources(Collector):
    """The live objects ``payouts serve`` registered, read at scrape time (and by the
    operator page): SV2 servers by role (``jd``, ``mining``), the node's status and the
    template revenue."""

    def __init__(self) -> None:
        self.servers: dict[str, ServerLike] = {}
        self.node: Callable[[], NodeStatusLike] | None = None
        self.revenue: Callable[[], Awaitable[int]] | None = None
        self.lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self.lock:
            servers, node = dict(self.servers), self.node
        conns = GaugeMetricFamily("payouts_sv2_connections",
                                  "Open SV2 connections (set up and pending)", labels=["role"])
        pending = GaugeMetricFamily(
            "payouts_sv2_handshakes_in_progress",
            "SV2 connections not set up yet (Noise handshake or SetupConnection outstanding)",
            labels=["role"])
        events = CounterMetricFamily("payouts_sv2_events",
                                     "SV2 server counters (stats keys)", labels=["role", "event"])
        channels = GaugeMetricFamily(
            "payouts_sv2_channels", "Open Mining Protocol channels (standard and extended)",
            labels=["role"])
        for role, server in sorted(servers.items()):
            conns.add_metric([role], server.connections)
            pending.add_metric([role], server.pending_connections)
            open_channels = getattr(server, "channels", None)
            if isinstance(open_channels, int):
                channels.add_metric([role], open_channels)
            for key, n in sorted(dict(server.stats).items()):
                events.add_metric([role, key], n)
        yield conns
        yield pending
        yield channels
        yield events
        if node is None:
            return
        st = node()
        now = time.time()
        yield GaugeMetricFamily("payouts_node_reachable",
                                "1 when the node answered the last poll, 0 when not (-1: not "
                                "asked yet)", value={True: 1, False: 0, None: -1}[st.reachable])
        if st.tip_height is not None:
            yield GaugeMetricFamily("payouts_node_tip_height", "Height of the node's tip",
                                    value=st.tip_height)
        if st.tip_time is not None:
            yield GaugeMetricFamily("payouts_node_tip_age_seconds",
                                    "Seconds since the tip's header time",
                                    value=max(now - st.tip_time, 0.0))
        if st.checked_at is not None:
            yield GaugeMetricFamily("payouts_node_answer_age_seconds",
                                    "Seconds since the node last answered",
                                    value=max(now - st.checked_at, 0.0))


SOURCES = _Sources()
REGISTRY.register(SOURCES)


def add_server(role: str, server: ServerLike) -> Callable[[], None]:
    """Show ``server``'s connections, handshakes in progress and counters under ``role``
    (``jd``, ``mining``) in /metrics and on the operator page. Returns the function that
    unregisters it (call it when that server stops)."""
    with SOURCES.lock:
        SOURCES.servers[role] = server

    def remove() -> None:
        with SOURCES.lock:
            if SOURCES.servers.get(role) is server:
                del SOURCES.servers[role]

    return remove


def set_node_source(status: Callable[[], NodeStatusLike],
                    revenue: Callable[[], Awaitable[int]] | None = None) -> Callable[[], None]:
    """Show the node's status (``status()``, e.g. the chain follower's) in /metrics and on the
    operator page, which also prices the distribution at ``await revenue()`` (the template's
    T). Returns the function that unregisters both."""
    with SOURCES.lock:
        SOURCES.node, SOURCES.revenue = status, revenue

    def remove() -> None:
        with SOURCES.lock:
            if SOURCES.node is status:
                SOURCES.node, SOURCES.revenue = None, None

    return remove


def servers() -> dict[str, ServerLike]:
    with SOURCES.lock:
        return dict(SOURCES.servers)


def node_status() -> NodeStatusLike | None:
    with SOURCES.lock:
        node = SOURCES.node
    return None if node is None else node()


async def template_revenue() -> int | None:
    """The node's current template revenue T through the registered source (None: none
    registered, or the node did not answer)."""
    with SOURCES.lock:
        revenue = SOURCES.revenue
    if revenue is None:
        return None
    try:
        return await revenue()
    except Exception:  # the page shows the distribution without amounts
        return None
