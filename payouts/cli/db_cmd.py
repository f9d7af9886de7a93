"""``payouts db``: create or upgrade the database schema, show its revision."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.engine import make_url

from payouts.errors import ValidationError
from payouts.settings import load_settings
from payouts.store import migrate
from payouts.store.engine import sqlite_path

app = typer.Typer(
    help=(
        "The database schema (Alembic migrations shipped with the engine). The database is the "
        "SQLite file payouts.db in the data dir unless database_url / PAYOUTS_DATABASE_URL "
        "names another (e.g. postgresql+psycopg://user@host/db)."
    ),
    no_args_is_help=True,
)

ConfigOption = typer.Option(None, "--config", "-c", help="TOML settings file.")


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@app.command("upgrade")
def upgrade(
    config: Path | None = ConfigOption,
    revision: str = typer.Option(
        "head", "--revision", "-r", help="Target revision (default: the newest, 'head')."
    ),
) -> None:
    """Create the schema or bring it up to date; safe to run again (does nothing when current).

    A missing SQLite data directory is created first. An unknown --revision changes nothing.
    """
    url = load_settings(config).effective_database_url
    _known_revision(revision)
    before = migrate.current_revision(url)
    migrate.upgrade(url, revision)
    after = migrate.current_revision(url)
    if before == after:
        typer.echo(f"{_shown(url)}: already at revision {after}; nothing to do")
    else:
        typer.echo(f"{_shown(url)}: upgraded from {before or '(empty)'} to {after}")


def _known_revision(revision: str) -> None:
    """Refuse a revision this engine does not ship before anything is created."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    try:
        if scripts.get_revision(revision) is None and revision not in ("head", "base"):
            raise CommandError(revision)
    except CommandError:
        known = ", ".join(s.revision for s in reversed(list(scripts.walk_revisions())))
        raise ValidationError(f"--revision {revision!r} is not a revision of this engine "
                              f"(known: {known}, or head)", code="unknown-revision") from None


@app.command("current")
def current(config: Path | None = ConfigOption) -> None:
    """Print the database's schema revision and whether it is the newest this engine ships.

    Exits 1 when the database needs `payouts db upgrade`. Reads only: a SQLite database that
    does not exist yet is reported, not created.
    """
    url = load_settings(config).effective_database_url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        typer.echo(f"{_shown(url)}: revision (empty), head {migrate.HEAD_REVISION} (no "
                   "database yet: `payouts db upgrade` creates it)")
        raise typer.Exit(1)
    rev = migrate.current_revision(url)
    head = migrate.head_revision()
    state = "up to date" if rev == head else "needs `payouts db upgrade`"
    typer.echo(f"{_shown(url)}: revision {rev or '(empty)'}, head {head} ({state})")
    if rev != head:
        raise typer.Exit(1)


@app.command("prune")
def prune(
    config: Path | None = ConfigOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing."),
) -> None:
    """Archive and delete shares, ledger lines and distributions older than [retention]
    keep_days that the window can no longer reach (docs/retention.md).

    payouts serve does this by itself every [retention] interval_sec; this runs it once. The
    archive (gzip CSV per UTC day) goes to [retention] archive_dir (default <data_dir>/archive).
    Balances never change: miner_balances keeps the sum of every ledger line.
    """
    from payouts.retention import archive_dir
    from payouts.retention import prune as run_prune
    from payouts.service import PoolService

    service = PoolService(load_settings(config))
    r = run_prune(service, dry_run=dry_run)
    verb = "would archive and delete" if dry_run else "archived and deleted"
    typer.echo(f"{verb}: {r.shares} shares, {r.ledger_lines} ledger lines, "
               f"{r.distributions} distributions, {r.events} accounting events older than "
               f"{r.cutoff.isoformat(timespec='seconds')} (the window reaches back to share "
               f"{r.reach_share_id})")
    if r.files:
        typer.echo(f"{len(r.files)} archive files under {archive_dir(service)}")
