"""``payouts distribution``: compute payout amounts from a distribution file (the command's
work is :mod:`payouts.cli.amounts`)."""

from __future__ import annotations

from pathlib import Path

import typer

from payouts.cli.amounts import print_amounts

app = typer.Typer(help="Payout distributions: weights turned into satoshis.")


@app.command("amounts")
def amounts(
    file: Path = typer.Argument(
        ..., help="Distribution JSON ('-' for stdin): pool_payout, payouts, additional_outputs."
    ),
    revenue: int = typer.Option(
        ..., "--revenue", "-T", help="Template revenue T in satoshis (coinbase_tx_value_remaining)."
    ),
) -> None:
    """Print the coinbase outputs, in wire order, that the distribution gives for revenue T.

    The math is sv2-spec PR #203 (extension 0x0003): W = weight_P + sum(weight[i]);
    amount[i] = floor(weight[i] * T' / W) with T' = T - sum(additional amounts); amounts below
    a payee's dust limit go to the pool payout. Anyone can check a coinbase by hand with it.
    """
    print_amounts(str(file), revenue)
