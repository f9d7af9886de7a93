"""``payouts serve``: run the REST API (uvicorn) on ``[api] host``/``port`` from the settings,
the settlement lifecycle (:class:`payouts.settlement.runner.SettlementRunner`, polling the
configured node every ``[settlement] poll_interval_sec``) and, with ``[jds] enabled``, the JD
server, all in one process and one event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from payouts.settings import load_settings

if TYPE_CHECKING:
    from payouts.node.interface import Node
    from payouts.service import PoolService
    from payouts.settlement.runner import SettlementRunner

log = logging.getLogger("payouts.serve")
# Loggers whose messages are already one JSON object each.
_JSON_LOGGERS = frozenset({"payouts.api.access", "payouts.settlement.events"})


class _JsonLines(logging.Formatter):
    """Access and settlement-event lines are already JSON; other records become one JSON object
    per line."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name in _JSON_LOGGERS:
            return msg
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": msg}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
    host: str | None = typer.Option(None, "--host", help="Override [api] host."),
    port: int | None = typer.Option(None, "--port", help="Override [api] port."),
    no_rate_limit: bool = typer.Option(
        False, "--no-rate-limit", help="Switch per-client limits off (load tests, or behind a "
        "limiting proxy)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Start the API, the settlement lifecycle and, with [jds] enabled = true, the Stratum V2 JD
    server in the same process.

    Logs are JSON lines on stderr. The JD server listens on [jds] listen with Noise (certificate
    signed by [jds] authority_secret_key), pushes every distribution the pool publishes
    (POST /v1/distributions) to its clients, and records each block it accepts; the settlement
    lifecycle tracks every recorded block in [distribution] mode and advances it found ->
    confirmed -> mature -> paid from the node ([node]) every [settlement] poll_interval_sec,
    logging each event; it resumes from the store after a restart. In musig2 mode the committee
    and the fallback come from [settlement.musig2] (docs/lifecycle.md) and the committee signs
    each mature block at /v1/musig2/sessions/block-<id>.
    """
    import uvicorn

    from api.app import create_app
    from payouts.node.factory import make_node
    from payouts.service import PoolService

    _configure_logging(log_level)
    settings = load_settings(config)
    service = PoolService(settings)
    node = make_node(settings)
    runner = make_runner(service, node)
    app = create_app(service, rate_limit=None) if no_rate_limit else create_app(service)
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    server = uvicorn.Server(uvicorn.Config(app, host=bind_host, port=bind_port, access_log=False,
                                           log_config=None, log_level=log_level))
    asyncio.run(run_served(server, service, node, runner))


def make_runner(service: PoolService, node: Node) -> SettlementRunner:
    """The settlement runner in the configured mode (``mode_from_settings``: musig2 takes its
    committee and fallback from ``[settlement.musig2]``); a setting it cannot use is a
    :class:`~payouts.errors.ConfigError`, which stops ``payouts serve`` with its message."""
    from payouts.settlement.runner import SettlementRunner

    runner = SettlementRunner(service, node)
    m = runner.mode.musig2
    signer = "here" if runner.lifecycle.fallback_signer else "elsewhere"
    detail = "" if m is None else (
        f" (committee of {len(m.committee)}, fallback after {m.fallback_timelock} blocks, "
        f"signed {signer}, CTV leaf {'on' if m.ctv_leaf else 'off'})")
    log.info("settlement lifecycle in %s mode%s, polling the node every %.1f s",
             runner.mode.name, detail, runner.interval)
    return runner


async def run_served(server: Any, service: PoolService, node: Node,
                     runner: SettlementRunner) -> None:
    """Run ``server`` (a ``uvicorn.Server`` on the service's app) with the settlement runner
    and, with ``[jds] enabled``, the JD server, in this event loop, until the server exits;
    then stop both and close the node. The mode is first checked against the node (a musig2
    CTV leaf needs BIP-119 active)."""
    from payouts.settlement.runner import check_mode_on_node

    jds = None
    try:
        await check_mode_on_node(runner.mode, node)
        settings = service.settings
        log.info("serving the API on http://%s:%d (network %s, database %s)",
                 server.config.host, server.config.port, settings.network,
                 settings.effective_database_url.split("@")[-1])
        if settings.jds.enabled:
            jds = await start_jds(service, node)
        runner.start()
        await server.serve()
    finally:
        await runner.stop()
        if jds is not None:
            await jds.stop()
        closer = getattr(node, "aclose", None) or getattr(node, "close", None)
        if closer is not None:
            result = closer()
            if asyncio.iscoroutine(result):
                await result


async def start_jds(service: Any, node: Any) -> ServedJds:
    """The JD server on ``node``, fed by the service's distributions, in the settlement
    runner's mode when one is attached; its declaration counters feed /metrics. Every block it
    gets accepted is recorded with its coinbase (so the runner tracks it at once) and followed
    by a fresh distribution."""
    from api import metrics
    from payouts.settlement.runner import mode_from_settings
    from sv2.jds import JobDeclarationServer
    from sv2.jds.server import FoundBlock

    settings = service.settings
    fitted = service.latest_distribution()
    if fitted is None:
        template = await node.block_template()
        fitted = service.publish_distribution(estimated_revenue=template.coinbase_value)

    settling = False

    async def on_block(found: FoundBlock) -> None:
        nonlocal settling
        if found.distribution_id is None:
            return
        service.record_block(distribution_id=found.distribution_id, revenue=found.revenue,
                             block_hash=found.block_hash, height=found.height,
                             coinbase=found.coinbase)
        log.info("block %s at height %d recorded for settlement (distribution %d)",
                 found.block_hash[::-1].hex(), found.height, found.distribution_id)
        # PR #203 §10: after a block, a fresh distribution replaces every earlier one at once
        # (no grace window), so the window just paid is not paid again.
        template = await node.block_template()
        settling = True
        try:
            service.publish_distribution(estimated_revenue=template.coinbase_value)
        finally:
            settling = False

    # The runner's mode object itself: what the JDS checks is what gets settled.
    runner = service.settlement
    mode = runner.mode if runner is not None else mode_from_settings(settings)
    jds = JobDeclarationServer.from_settings(settings, node, fitted, on_block=on_block,
                                             musig2=mode.musig2, mode=mode)
    await jds.start()
    service.on_publish.append(lambda f: jds.publish(f, settlement=settling))
    served = ServedJds(jds, metrics.add_declaration_source(lambda: jds.stats))
    log.info("JD server listening on %s:%d (Noise; extensions %s; distribution %d)",
             *jds.address, ", ".join(f"{e:#06x}" for e in jds.supported),
             fitted.distribution.distribution_id)
    return served


@dataclass
class ServedJds:
    """A JD server started by :func:`start_jds` and the unregistration of its metrics."""

    jds: Any
    remove_metrics: Callable[[], None]

    async def stop(self) -> None:
        await self.jds.stop()
        self.remove_metrics()
