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
from typing import Any

import typer

from payouts.settings import load_settings

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
    logging each event; it resumes from the store after a restart.
    """
    from api.app import create_app
    from payouts.node.factory import make_node
    from payouts.service import PoolService

    _configure_logging(log_level)
    settings = load_settings(config)
    service = PoolService(settings)
    node = make_node(settings)
    runner = _make_runner(service, node)
    app = create_app(service, rate_limit=None) if no_rate_limit else create_app(service)
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    log.info("serving the API on http://%s:%d (network %s, database %s)", bind_host, bind_port,
             settings.network, settings.effective_database_url.split("@")[-1])
    asyncio.run(_serve(app, service, node, runner, bind_host, bind_port, log_level))


def _make_runner(service: Any, node: Any) -> Any:
    """The settlement runner in the configured mode, or None (logged) when the mode cannot be
    run from the settings alone (musig2 needs its committee parameters)."""
    from payouts.errors import ConfigError
    from payouts.settlement.runner import SettlementRunner

    try:
        runner = SettlementRunner(service, node)
    except ConfigError as exc:
        log.warning("settlement lifecycle not started: %s", exc.message)
        return None
    log.info("settlement lifecycle in %s mode, polling the node every %.1f s",
             runner.mode.name, runner.interval)
    return runner


async def _serve(app: Any, service: Any, node: Any, runner: Any, host: str, port: int,
                 log_level: str) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False,
                                           log_config=None, log_level=log_level))
    jds = await start_jds(service, node) if service.settings.jds.enabled else None
    if runner is not None:
        runner.start()
    try:
        await server.serve()
    finally:
        if runner is not None:
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

    extra: dict[str, Any] = {}
    if service.settlement is not None:
        extra["mode"] = service.settlement.mode  # what the JDS checks is what gets settled
    jds = JobDeclarationServer.from_settings(settings, node, fitted, on_block=on_block, **extra)
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
