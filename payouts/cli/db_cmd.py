"""``payouts db``: create or upgrade the database schema, show its revision."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.engine import make_url

from payouts.settings import load_settings
from payouts.store import migrate

app = typer.Typer(
    help=(
        "The database schema (Alembic migrations shipped with the engine). The database is the "
        "SQLite file payouts.db in the data dir unless database_url / PAYOUTS_DATABASE_URL "
        "names another (e.g. postgresql+psycopg://user@host/db)."
    )
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

    A missing SQLite data directory is created first.
    """
    url = load_settings(config).effective_database_url
    before = migrate.current_revision(url)
    migrate.upgrade(url, revision)
    after = migrate.current_revision(url)
    if before == after:
        typer.echo(f"{_shown(url)}: already at revision {after}; nothing to do")
    else:
        typer.echo(f"{_shown(url)}: upgraded from {before or '(empty)'} to {after}")


@app.command("current")
def current(config: Path | None = ConfigOption) -> None:
    """Print the database's schema revision and whether it is the newest this engine ships.

    Exits 1 when the database needs `payouts db upgrade`.
    """
    url = load_settings(config).effective_database_url
    rev = migrate.current_revision(url)
    head = migrate.head_revision()
    state = "up to date" if rev == head else "needs `payouts db upgrade`"
    typer.echo(f"{_shown(url)}: revision {rev or '(empty)'}, head {head} ({state})")
    if rev != head:
        raise typer.Exit(1)
