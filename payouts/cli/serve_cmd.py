"""``payouts serve``: run the REST API (uvicorn) on ``[api] host``/``port`` from the settings."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

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
    """Start the API (and say whether the JD server runs). Logs are JSON lines on stderr."""
    import uvicorn

    from api.app import create_app
    from payouts.service import PoolService

    _configure_logging(log_level)
    settings = load_settings(config)
    service = PoolService(settings)
    app = create_app(service, rate_limit=None) if no_rate_limit else create_app(service)
    if settings.jds.enabled:
        # sv2.jds has no committed server entry point wired to PoolService yet; say so loudly
        # instead of pretending the JD server runs.
        log.warning("jds.enabled is set, but `payouts serve` does not start the JD server yet "
                    "(sv2.jds is not integrated with the service); only the API is running")
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    log.info("serving the API on http://%s:%d (network %s, database %s)", bind_host, bind_port,
             settings.network, settings.effective_database_url.split("@")[-1])
    uvicorn.run(app, host=bind_host, port=bind_port, access_log=False, log_config=None,
                log_level=log_level)
