"""``payouts serve``: run the REST API (uvicorn) on ``[api] host``/``port`` from the settings."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from payouts.settings import load_settings

log = logging.getLogger("payouts.serve")


class _JsonLines(logging.Formatter):
    """Access lines are already JSON; other records become one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.name == "payouts.api.access":
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
    """Start the API and, with [jds] enabled = true, the Stratum V2 JD server in the same process.

    Logs are JSON lines on stderr. The JD server listens on [jds] listen with Noise (certificate
    signed by [jds] authority_secret_key), pushes every distribution the pool publishes
    (POST /v1/distributions) to its clients, and records each block it accepts for settlement.
    """
    from api.app import create_app
    from payouts.service import PoolService

    _configure_logging(log_level)
    settings = load_settings(config)
    service = PoolService(settings)
    app = create_app(service, rate_limit=None) if no_rate_limit else create_app(service)
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    log.info("serving the API on http://%s:%d (network %s, database %s)", bind_host, bind_port,
             settings.network, settings.effective_database_url.split("@")[-1])
    asyncio.run(_serve(app, service, bind_host, bind_port, log_level))


async def _serve(app: Any, service: Any, host: str, port: int, log_level: str) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False,
                                           log_config=None, log_level=log_level))
    jds = await _start_jds(service) if service.settings.jds.enabled else None
    try:
        await server.serve()
    finally:
        if jds is not None:
            await jds.stop()
            closer = getattr(jds.node, "aclose", None) or getattr(jds.node, "close", None)
            if closer is not None:
                result = closer()
                if asyncio.iscoroutine(result):
                    await result


async def _start_jds(service: Any) -> Any:
    """The JD server on the configured node, fed by the service's distributions."""
    from payouts.node.factory import make_node
    from sv2.jds import JobDeclarationServer
    from sv2.jds.server import FoundBlock

    settings = service.settings
    node = make_node(settings)
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
                             block_hash=found.block_hash, height=found.height)
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

    jds = JobDeclarationServer.from_settings(settings, node, fitted, on_block=on_block)
    await jds.start()
    service.on_publish.append(lambda f: jds.publish(f, settlement=settling))
    log.info("JD server listening on %s:%d (Noise; extensions %s; distribution %d)",
             *jds.address, ", ".join(f"{e:#06x}" for e in jds.supported),
             fitted.distribution.distribution_id)
    return jds
