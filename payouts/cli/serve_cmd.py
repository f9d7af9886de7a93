"""``payouts serve``: run the REST API (uvicorn) on ``[api] host``/``port`` from the settings,
the settlement lifecycle (:class:`payouts.settlement.runner.SettlementRunner`, polling the
configured node every ``[settlement] poll_interval_sec``) and, with ``[jds] enabled``, the JD
server, all in one process and one event loop. The wiring is :class:`payouts.served.ServedPool`;
this module holds the command line and the JSON log format."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import typer

from payouts.errors import ConfigError
from payouts.settings import Settings

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
    # Alembic announces each of its plugins at info level on every migration: noise.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _first_start_without_a_node(settings: Settings) -> None:
    """On a first start (no SQLite database yet) a bitcoind that does not answer is fatal
    (the window needs the network difficulty): say so in one line, before anything is
    created. Later starts serve on the known difficulty (payouts.served follows the node)."""
    from payouts.node.factory import make_node
    from payouts.node.interface import NodeError
    from payouts.store.engine import sqlite_path

    path = sqlite_path(settings.effective_database_url)
    if settings.node.backend != "bitcoind" or path is None or path.exists() \
            or settings.accounting.pin_difficulty is not None:
        return

    async def probe() -> str | None:
        node = make_node(settings)
        try:
            await node.tip()
        except NodeError as e:
            return e.reason
        finally:
            await node.aclose()
        return None

    reason = asyncio.run(probe())
    if reason is not None:
        raise ConfigError(f"the node is unreachable ({reason}): a first start needs its "
                          "network difficulty; start the node, or check [node] rpc_url and "
                          "its credentials")


def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
    host: str | None = typer.Option(None, "--host", help="Override [api] host."),
    port: int | None = typer.Option(None, "--port", help="Override [api] port."),
    no_rate_limit: bool = typer.Option(
        False, "--no-rate-limit", help="Switch the API's per-client limits off (load tests, or "
        "behind a limiting proxy); [api] rate_limit_per_sec and rate_limit_burst set them, "
        "shared by every payouts serve on one PostgreSQL database."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
    role: str | None = typer.Option(
        None, "--role", help="Override [cluster] role: all (everything in this process; the "
        "only role on SQLite), api (REST frontend), jds (REST + JD server frontend), leader "
        "(campaigns; once elected runs the accountant, publishing and settlement). Any role "
        "but all needs PostgreSQL (docs/deployment.md)."),
) -> None:
    """Start the API, the settlement lifecycle and, with [jds] enabled = true, the Stratum V2 JD
    server in the same process.

    The settings are checked first, as payouts config check does, and the ports it will listen
    on must be free: any problem stops it with one line per problem (exit 2) before the
    database is touched.

    Logs are JSON lines on stderr. The JD server listens on [jds] listen with Noise (its
    certificate signed by the authority key of [jds] authority_secret_key_file, whose public
    key is logged at start: miners pin it), pushes every distribution the pool publishes
    (POST /v1/distributions) to its clients, and records each block it accepts. The settlement
    lifecycle tracks every recorded block in [distribution] mode and advances it found ->
    confirmed -> mature -> paid from the node ([node]) every [settlement] poll_interval_sec,
    logging each event; it resumes from the store after a restart. In musig2 mode the
    committee and the fallback come from [settlement.musig2] (docs/lifecycle.md) and the
    committee signs each mature block at /v1/musig2/sessions/block-<id>.
    """
    import uvicorn

    from payouts.cli.preflight import authority_public_key_of, check_ports, load_valid_settings

    settings = load_valid_settings(config, role=role)
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    check_ports(settings, (bind_host, bind_port))
    _first_start_without_a_node(settings)

    _configure_logging(log_level)
    # The accounting window is restored while the API's modules load: the restore spends much
    # of its time outside the GIL (reading the store, zlib, numpy's sorts) and the imports
    # almost none, so the two overlap (issue #11: exec to first answer within 2 s). The
    # engine's own modules are imported first, here, so the two threads import nothing in
    # common.
    from payouts.service import PoolService

    restoring: Future[PoolService] | None = None
    if not settings.cluster.active:
        one = ThreadPoolExecutor(1, thread_name_prefix="restore")
        restoring = one.submit(PoolService, settings)
        one.shutdown(wait=False)  # its thread ends with the restore; nothing waits for it here
    from api.http_server import uvicorn_config
    from payouts.served import FROM_SETTINGS, ServedPool, Serving

    if settings.jds.enabled and settings.jds.authority_secret_key:
        log.info("authority public key (miners pin it: payouts jdc run --authority-key): %s",
                 authority_public_key_of(settings.jds.authority_secret_key))
    rate = None if no_rate_limit else FROM_SETTINGS
    pool: Serving
    if settings.cluster.active:
        from payouts.cluster_member import ClusterMember

        pool = ClusterMember(settings, rate_limit=rate, port=bind_port)
    else:
        assert restoring is not None
        pool = ServedPool(settings, rate_limit=rate, service=restoring.result())
    server = uvicorn.Server(uvicorn_config(pool.app, bind_host, bind_port, log_level=log_level))
    # uvloop (libuv): the event loop every server of the process runs on. Its socket I/O and
    # scheduling in C took a quarter of a balance read's CPU off (issue #17).
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(pool.run(server))
