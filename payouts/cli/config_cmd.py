"""``payouts config``: show and check the effective settings."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from payouts.settings import load_settings

app = typer.Typer(help="Show or check the effective settings (file + PAYOUTS_* environment).")

ConfigOption = typer.Option(None, "--config", "-c", help="TOML settings file.")


@app.command("show")
def show(config: Path | None = ConfigOption) -> None:
    """Print the effective settings as JSON (secrets masked)."""
    settings = load_settings(config)
    data = settings.model_dump(mode="json")
    if data["jds"].get("authority_secret_key"):
        data["jds"]["authority_secret_key"] = "***"
    if data["node"].get("rpc_password"):
        data["node"]["rpc_password"] = "***"
    data["effective_database_url"] = settings.effective_database_url
    typer.echo(json.dumps(data, indent=2))


@app.command("check")
def check(config: Path | None = ConfigOption) -> None:
    """Validate the settings; exit 2 with one line per problem if they are invalid."""
    load_settings(config)
    typer.echo("settings are valid")
