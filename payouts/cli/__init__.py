"""The ``payouts`` command line. Each command group lives in its own module."""

from __future__ import annotations

import sys

import typer

from payouts import __version__
from payouts.cli import (  # the API: payouts serve, payouts tokens
    config_cmd,
    ctv_cmd,
    db_cmd,
    demo_cmd,
    distribution_cmd,
    jdc_cmd,
    musig2_cmd,
    serve_cmd,
    sv2_cmd,
    tokens_cmd,
)
from payouts.errors import PayoutsError

app = typer.Typer(
    name="payouts",
    help=(
        "Noncustodial payout engine for Bitcoin mining pools.\n\n"
        "Turns accepted shares into payouts the pool never holds: per-miner coinbase outputs, "
        "a CTV-committed fan-out, or a MuSig2-signed spend. Settings come from a TOML file "
        "(--config or $PAYOUTS_CONFIG) and PAYOUTS_* environment variables."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(ctv_cmd.app, name="ctv")
app.add_typer(db_cmd.app, name="db")
app.add_typer(distribution_cmd.app, name="distribution")
app.add_typer(jdc_cmd.app, name="jdc")
app.add_typer(musig2_cmd.app, name="musig2")
app.add_typer(sv2_cmd.app, name="sv2")
app.command("demo")(demo_cmd.demo)
app.add_typer(tokens_cmd.app, name="tokens")
app.command("serve")(serve_cmd.serve)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"payouts {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Noncustodial payout engine for Bitcoin mining pools."""


def main() -> None:
    """Console entry point: engine errors print as one clear line and exit 2."""
    try:
        # Without standalone mode click returns a command's exit code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PayoutsError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
