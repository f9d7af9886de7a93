"""``payouts cluster``: several ``payouts serve`` processes on one PostgreSQL, one elected
leader (docs/deployment.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from payouts.settings import load_settings

app = typer.Typer(
    help="Several payouts serve processes on one PostgreSQL: the elected leader. Roles, "
    "failover and the topology: docs/deployment.md.",
    no_args_is_help=True,
)


@app.command("status")
def status(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML settings file."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
) -> None:
    """Show the leader lease: the epoch (elections so far), who holds it, since when, and
    whether a process holds the leader lock right now."""
    from sqlalchemy import text

    from payouts.store.engine import make_engine
    from payouts.store.leader_lease import LEADER_LOCK, read_lease

    settings = load_settings(config)
    engine = make_engine(settings.effective_database_url)
    try:
        lease = read_lease(engine)
        held = None
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                held = bool(conn.execute(text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND classid = :k "
                    "AND objid = hashtext(current_schema())::oid AND objsubid = 2)"),
                    {"k": LEADER_LOCK}).scalar_one())
    finally:
        engine.dispose()
    since = lease.since.isoformat() if lease.since is not None else None
    if as_json:
        typer.echo(json.dumps({"epoch": lease.epoch, "holder": lease.holder or None,
                               "since": since, "leader_lock_held": held}))
        return
    if lease.epoch == 0:
        typer.echo("no leader was ever elected (epoch 0)")
    else:
        typer.echo(f"epoch {lease.epoch}: {lease.holder}, elected {since}")
    if held is not None:
        typer.echo(f"leader lock: {'held' if held else 'free (no leader right now)'}")
