"""``payouts tokens``: operator API tokens (create prints the secret once; list; revoke)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import typer

from payouts.errors import ValidationError
from payouts.settings import load_settings

app = typer.Typer(
    help=(
        "Operator bearer tokens for the REST API. Only a SHA-256 of each token is stored; "
        "the token itself is printed once by `create`. Scopes: admin (everything), read, "
        "shares:write, distributions:write, settlements:write."
    )
)

ConfigOption = typer.Option(None, "--config", "-c", help="TOML settings file.")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` -> timedelta."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValidationError(f"--expires-in must look like 30d, 12h, 90m or 3600s, got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _engine(config: Path | None):  # type: ignore[no-untyped-def]
    from payouts.store import migrate
    from payouts.store.engine import make_engine

    engine = make_engine(load_settings(config).effective_database_url)
    migrate.upgrade(engine)  # the API tables must exist (idempotent)
    return engine


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Unique token name (e.g. the client)."),
    scope: list[str] = typer.Option(..., "--scope", help="A scope; repeat for several."),
    expires_in: str | None = typer.Option(None, "--expires-in", help="e.g. 30d, 12h."),
    config: Path | None = ConfigOption,
) -> None:
    """Create a token and print it (once: it cannot be shown again)."""
    from api import store

    expiry = parse_duration(expires_in) if expires_in else None
    secret, rec = store.create_token(_engine(config), name, scope, expiry)
    typer.echo(secret)
    until = rec.expires_at.isoformat() if rec.expires_at else "never"
    typer.echo(f"# token {rec.name!r}, scopes {' '.join(sorted(rec.scopes))}, expires {until}",
               err=True)


@app.command("list")
def list_(config: Path | None = ConfigOption) -> None:
    """List tokens (never their secrets)."""
    from api import store

    now = store.now_utc()
    typer.echo(f"{'name':24} {'scopes':40} {'expires':26} state")
    for t in store.list_tokens(_engine(config)):
        state = ("revoked" if t.revoked else
                 "expired" if t.expires_at is not None and t.expires_at <= now else "active")
        exp = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never"
        typer.echo(f"{t.name:24} {' '.join(sorted(t.scopes)):40} {exp:26} {state}")


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="Name of the token to revoke."),
    config: Path | None = ConfigOption,
) -> None:
    """Revoke a token; requests with it fail from the next request on."""
    from api import store

    store.revoke_token(_engine(config), name)
    typer.echo(f"revoked {name!r}")
