"""`payouts demo` end to end on the embedded kernel: JD over Noise, blocks, maturity, payouts."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

from rich.console import Console

from regtest.demo import run


def test_demo_pays_every_miner_on_chain() -> None:
    out = io.StringIO()
    results = asyncio.run(
        run(("coinbase", "ctv", "musig2"), "kernel", miners=6, shares=300,
            console=Console(file=out, width=200))
    )
    by_mode = {r.mode: r for r in results}
    assert by_mode["ctv"].status.startswith("skipped: the node does not enforce BIP-119")
    for mode in ("coinbase", "musig2"):
        r = by_mode[mode]
        assert r.status == "paid"
        # 6 miners + the pool output, each found in the node's UTXO set with its exact amount
        assert len(r.landed) == 7
        assert all(sat > 0 for _, _, sat in r.landed.values())
    assert by_mode["musig2"].height > by_mode["coinbase"].height + 100  # matured in between
    text = out.getvalue()
    assert "DeclareMiningJob accepted" in text and "MuSig2: " in text
    assert "SetCustomMiningJob accepted" in text and "a CPU-found share credited" in text


def test_demo_cli_rejects_bad_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "payouts", "demo", "--mode", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--mode must be one of" in proc.stderr
