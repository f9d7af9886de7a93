"""The whole demo against a real bitcoind regtest node: JD over Noise, blocks accepted through
submitblock, maturity, coinbase and MuSig2 payouts found with their exact amounts in the node's
UTXO set; and CTV end to end when (and only when) the node is a Bitcoin Inquisition build."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console

from regtest.demo import run
from regtest.harness import RegtestNode

pytestmark = pytest.mark.bitcoind


def test_demo_on_bitcoind_pays_every_miner(bitcoind_path: Path) -> None:
    out = io.StringIO()
    results = asyncio.run(run(("coinbase", "ctv", "musig2"), "bitcoind", miners=5, shares=200,
                              console=Console(file=out, width=200)))
    by_mode = {r.mode: r for r in results}
    for mode in ("coinbase", "musig2"):
        assert by_mode[mode].status == "paid", out.getvalue()
        assert len(by_mode[mode].landed) == 6  # 5 miners + the pool, checked via gettxout
    with RegtestNode(bitcoind_path) as node:
        inquisition = node.is_inquisition
    if not inquisition:
        # Bitcoin Core does not enforce BIP-119: the demo must refuse to make a CTV output.
        assert by_mode["ctv"].status.startswith("skipped: the node does not enforce BIP-119")
    else:
        assert by_mode["ctv"].status == "paid", out.getvalue()


def test_ctv_fanout_on_bitcoin_inquisition(bitcoind_path: Path) -> None:
    with RegtestNode(bitcoind_path) as node:
        inquisition = node.is_inquisition
    if not inquisition:
        pytest.skip("$BITCOIND is not a Bitcoin Inquisition build (getdeploymentinfo lists no "
                    "checktemplateverify); CTV enforcement needs one")
    out = io.StringIO()
    (result,) = asyncio.run(run(("ctv",), "bitcoind", miners=5, shares=200,
                                console=Console(file=out, width=200)))
    assert result.status == "paid", out.getvalue()
    assert len(result.landed) == 6
