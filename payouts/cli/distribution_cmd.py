"""``payouts distribution``: compute payout amounts from a distribution file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.jsonio import distribution_from_json, outputs_to_json
from payouts.errors import ValidationError

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
    text = typer.get_text_stream("stdin").read() if str(file) == "-" else _read(file)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{file} is not valid JSON: {exc}") from None
    result = compute_outputs(distribution_from_json(doc), revenue)
    typer.echo(json.dumps(outputs_to_json(result), indent=2))


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}") from None
