"""``payouts demo``: the main job end to end on the embedded default (see regtest/demo.py)."""

from __future__ import annotations

import asyncio

import typer

from payouts.errors import ValidationError


def demo(
    mode: str = typer.Option(
        "all", "--mode", "-m", help="Settlement mode: coinbase, ctv, musig2 or all."
    ),
    node: str = typer.Option(
        "kernel",
        "--node",
        "-n",
        help="kernel: Bitcoin Core's consensus code in-process (libbitcoinkernel, no CTV); "
        "bitcoind: a regtest bitcoind ($BITCOIND, PATH, or built once from source).",
    ),
    miners: int = typer.Option(12, help="Number of simulated miners."),
    shares: int = typer.Option(2_000, help="Shares submitted per mode."),
    seed: int = typer.Option(7, help="Seed for the simulated miners and shares."),
) -> None:
    """Run the whole engine end to end on a regtest chain.

    Simulated miners submit shares; the pool publishes a distribution; a Stratum V2 JD server
    and JD client talk over loopback TCP with Noise; the client declares a job paying the
    miners, solves it and pushes the solution; the node accepts the block; 100 blocks mature
    it; the payouts are settled and every output is checked on chain. With --mode all, every
    mode the node supports runs (ctv needs a node that enforces BIP-119).
    """
    from regtest.demo import MODES, run, selected_modes

    if mode not in (*MODES, "all"):
        raise ValidationError(f"--mode must be one of {', '.join(MODES)} or all, got {mode!r}")
    if node not in ("kernel", "bitcoind"):
        raise ValidationError(f"--node must be kernel or bitcoind, got {node!r}")
    if miners < 1 or shares < 1:
        raise ValidationError("--miners and --shares must be positive")
    asyncio.run(run(selected_modes(mode), node, miners=miners, shares=shares, seed=seed))
