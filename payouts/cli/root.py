"""The ``payouts`` command line's root group (typer). Each command group lives in its own
module.

The groups are loaded lazily: ``payouts --help`` lists them from :data:`COMMANDS` (name, module,
one-line help) without importing any of them, and ``payouts GROUP ...`` imports only that
group's module. A group's module may import SQLAlchemy, FastAPI, NumPy or the SV2 stack; the
others never pay for it (issue #14: ``payouts --help`` in <= 150 ms of CPU).

Help is plain text (click's formatter), not rich markup: a help string is printed as written,
square brackets included (``[jds] enabled``), and paragraphs are wrapped to the terminal.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import typer
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from payouts import __version__
from payouts.cli import fail
from payouts.errors import PayoutsError


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """A command (group) of ``payouts``: where it lives and its line in ``payouts --help``.
    ``attr`` is a ``typer.Typer`` (a group) or a plain function (one command)."""

    module: str
    attr: str
    summary: str


#: Every command of ``payouts``, in the order ``payouts --help`` lists them. ``summary`` must be
#: the first sentence of the command's own help (tests/cli/test_cli_root.py checks it).
COMMANDS: dict[str, LazyCommand] = {
    "demo": LazyCommand("payouts.cli.demo_cmd", "demo",
                        "Run the whole engine end to end on a regtest chain."),
    "serve": LazyCommand("payouts.cli.serve_cmd", "serve",
                         "Start the API, the settlement lifecycle and, with [jds] enabled = "
                         "true, the Stratum V2 JD server in the same process."),
    "config": LazyCommand("payouts.cli.config_cmd", "app",
                          "Show or check the effective settings (file + PAYOUTS_* environment)."),
    "keys": LazyCommand("payouts.cli.keys_cmd", "app",
                        "The pool's authority key: the Noise certificates of its SV2 servers."),
    "db": LazyCommand("payouts.cli.db_cmd", "app",
                      "The database schema (Alembic migrations shipped with the engine)."),
    "cluster": LazyCommand("payouts.cli.cluster_cmd", "app",
                           "Several payouts serve processes on one PostgreSQL: the elected "
                           "leader."),
    "tokens": LazyCommand("payouts.cli.tokens_cmd", "app",
                          "Operator bearer tokens for the REST API."),
    "distribution": LazyCommand("payouts.cli.distribution_cmd", "app",
                                "Payout distributions: weights turned into satoshis."),
    "ctv": LazyCommand("payouts.cli.ctv_cmd", "app",
                       "BIP-119 CTV: template hashes, the fan-out tree of the ctv settlement "
                       "mode, and a miner's exit path."),
    "musig2": LazyCommand("payouts.cli.musig2_cmd", "app",
                          "MuSig2 settlement: the committee's output, and signing as a "
                          "committee member."),
    "jdc": LazyCommand("payouts.cli.jdc_cmd", "app",
                       "Job Declaration client: declare jobs with the pool's payout "
                       "distribution (SV2 JD)."),
    "sv2": LazyCommand("payouts.cli.sv2_cmd", "app",
                       "Stratum V2 frames: decode to JSON, encode from JSON (plaintext, no "
                       "Noise)."),
}


def _plain(t: typer.Typer) -> typer.Typer:
    """``t`` and its sub-groups with rich markup off: help text printed as written."""
    t.rich_markup_mode = None
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _plain(group.typer_instance)
    return t


def load_command(name: str) -> Any:
    """The click command of ``payouts NAME`` (its module imported now)."""
    entry = COMMANDS[name]
    obj = getattr(importlib.import_module(entry.module), entry.attr)
    command: Any
    if isinstance(obj, typer.Typer):
        # a group even with one command (payouts distribution amounts)
        command = typer.main.get_group(_plain(obj))
    else:
        single = typer.Typer(add_completion=False, rich_markup_mode=None)
        single.command(name)(obj)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The root group: built-in options here, every command loaded on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.add_command(load_command(cmd_name), cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, entry.summary) for name, entry in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="payouts",
    cls=LazyGroup,
    help=(
        "Noncustodial payout engine for Bitcoin mining pools.\n\n"
        "Turns accepted shares into payouts the pool never holds: per-miner coinbase outputs, "
        "a CTV-committed fan-out, or a MuSig2-signed spend. Settings come from a TOML file "
        "(--config or $PAYOUTS_CONFIG) and PAYOUTS_* environment variables "
        "(docs/settings.md lists every one)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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


def run() -> None:
    """Run the command line (:func:`payouts.cli.main` is the console entry point)."""
    try:
        # Without standalone mode click returns a command's exit code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PayoutsError as exc:
        fail(str(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(1)
    except ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 1 else exc.exit_code)
    except OSError as exc:
        # A file or port the user named: no traceback for what only the user can change.
        where = f" ({exc.filename})" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}")
