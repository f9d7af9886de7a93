"""``payouts distribution amounts``: the outputs a distribution gives for a revenue T.

It is how anyone checks a coinbase (a miner with the public ``GET /v1/distribution``, a script
over many blocks), so its plain form skips the command-line framework: :func:`fast_amounts`
recognises exactly ``FILE`` and ``-T/--revenue N`` (any order) and runs :func:`print_amounts`,
as the typer command (:mod:`payouts.cli.distribution_cmd`) does; anything else (``--help``, a
typo, a missing value) goes to typer, whose parsing and messages stay the reference. typer
builds a pydantic adapter per parameter (~60 ms of imports), and a few payees need no NumPy:
the plain form takes well under 150 ms of CPU (benchmarks/bench_cli.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.jsonio import distribution_from_json, outputs_to_json
from payouts.errors import ValidationError


def print_amounts(file: str, revenue: int) -> None:
    """Read the distribution JSON in ``file`` ('-': stdin) and print its outputs for
    ``revenue``."""
    text = sys.stdin.read() if file == "-" else _read(Path(file))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{file} is not valid JSON: {exc}") from None
    result = compute_outputs(distribution_from_json(doc), revenue)
    sys.stdout.write(json.dumps(outputs_to_json(result), indent=2) + "\n")


def fast_amounts(args: list[str]) -> bool:
    """Run ``amounts`` for ``args`` (after ``distribution amounts``) if they are exactly
    ``FILE`` and ``-T/--revenue N``; ``False`` (nothing done) for anything else."""
    file: str | None = None
    revenue: str | None = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-T", "--revenue") and rest and revenue is None:
            revenue = rest.pop(0)
        elif arg.startswith("--revenue=") and revenue is None:
            revenue = arg.partition("=")[2]
        elif file is None and (arg == "-" or not arg.startswith("-")):
            file = arg
        else:
            return False
    if file is None or revenue is None or not revenue.isdigit():
        return False
    print_amounts(file, int(revenue))
    return True


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}") from None
