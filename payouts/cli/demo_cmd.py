"""``payouts demo``: the main job end to end on the embedded default."""

from __future__ import annotations

import random
import time

import typer
from rich.console import Console
from rich.table import Table

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.distribution.scripts import dust_limit


def demo(
    miners: int = typer.Option(8, help="Number of simulated miners."),
    revenue: int = typer.Option(312_500_000 + 4_210_000, help="Template revenue T in sats."),
    seed: int = typer.Option(7, help="Random seed for the simulated shares."),
) -> None:
    """Run the engine end to end with simulated miners and print who gets paid what."""
    console = Console()
    rng = random.Random(seed)
    t0 = time.perf_counter()
    payees = []
    for i in range(miners):
        script = bytes((0x51, 0x20)) + rng.randbytes(32)
        payees.append(Payee(script, rng.randint(1, 10_000) * 65_536, dust_limit(script), f"m{i}"))
    pool = PoolPayout(bytes((0x00, 0x14)) + rng.randbytes(20), sum(p.weight for p in payees) // 49)
    dist = Distribution(1, pool, tuple(payees))
    result = compute_outputs(dist, revenue)
    table = Table(title=f"Distribution 1 for T = {revenue:,} sat")
    for col in ("miner", "weight", "amount (sat)"):
        table.add_column(col, justify="right")
    for payee, amount in zip(dist.payouts, result.payee_amounts, strict=True):
        table.add_row(payee.account or "?", f"{payee.weight:,}", f"{amount:,}")
    table.add_row("pool", f"{pool.weight:,}", f"{result.pool_amount:,}")
    console.print(table)
    assert result.total == revenue
    console.print(f"outputs sum to T exactly; {time.perf_counter() - t0:.3f}s")
