"""``payouts config``: show and check the effective settings, print their reference."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Show or check the effective settings (file + PAYOUTS_* environment).",
                  no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", "-c", help="TOML settings file.")
_SECRETS = (("jds", "authority_secret_key"), ("node", "rpc_password"),
            ("settlement", "fallback_secret_key"))


@app.command("show")
def show(config: Path | None = ConfigOption) -> None:
    """Print the effective settings as JSON (secrets masked), with the authority public key
    miners pin (jds.authority_public_key) derived from the secret key.

    Checks them first, as payouts config check does."""
    from payouts.cli.preflight import authority_public_key_of, load_valid_settings

    settings = load_valid_settings(config)
    data = settings.model_dump(mode="json")
    jds = data["jds"]
    jds["server_id"] = settings.jds.effective_server_id
    if jds.get("authority_secret_key"):
        jds["authority_public_key"] = authority_public_key_of(jds["authority_secret_key"])
        jds["authority_secret_key"] = "***"
    if data["node"].get("rpc_password"):
        data["node"]["rpc_password"] = "***"
    musig = data["settlement"].get("musig2") or {}
    if musig.get("fallback_secret_key"):
        musig["fallback_secret_key"] = "***"
    data["effective_database_url"] = settings.effective_database_url
    typer.echo(json.dumps(data, indent=2))


@app.command("check")
def check(config: Path | None = ConfigOption) -> None:
    """Check the settings as payouts serve does before it starts; exit 2 with one line per
    problem, naming the key (or the environment variable that set it).

    Reads only: creates no database, directory or file. Whether the ports are free and the
    node answers is checked by payouts serve itself."""
    from payouts.cli.preflight import load_valid_settings

    load_valid_settings(config)
    typer.echo("settings are valid")


@app.command("reference")
def reference() -> None:
    """Print the reference of every setting (Markdown: docs/settings.md), generated from the
    settings model: key, type, default, environment variable, description."""
    from payouts.settings_reference import render

    typer.echo(render(), nl=False)
