"""``payouts musig2 output``: the musig2 settlement output of a distribution file, equal to
the builder's (and so to docs/extensions/0x4003-vectors.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from payouts.cli import app
from payouts.errors import ValidationError
from payouts.tx.transaction import Tx
from sv2.messages import SetSettlementMode, decode_frame
from sv2.settlement_vectors.cases import committee
from sv2.settlement_vectors.keys import xonly
from tests.extensions.vectors import cases, distribution

runner = CliRunner()
KEYS = [k.hex() for k in committee(1, 2)]


def _args(file: Path, revenue: int, *extra: str, keys: list[str] = KEYS) -> list[str]:
    out = ["musig2", "output", str(file), "--revenue", str(revenue)]
    for k in keys:
        out += ["--committee", k]
    return [*out, "--fallback-key", xonly(3).hex(), *extra]


def _ok(*args: str) -> dict[str, Any]:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)
    doc: dict[str, Any] = json.loads(res.output)
    return doc


@pytest.fixture
def small(tmp_path: Path) -> Path:
    f = tmp_path / "small.json"
    f.write_text(json.dumps(distribution("small")))
    return f


def test_output_equals_the_conformance_vector(small: Path) -> None:
    """The vector musig2.small-ctv-leaf, from the command line."""
    case = next(c for c in cases("musig2") if c["name"] == "small-ctv-leaf")
    r = case["result"]
    out = _ok(*_args(small, case["revenue"], "--fee-rate", "2", "--ctv-leaf"))
    assert out["committee"] == KEYS
    assert out["internal_key"] == r["internal_key"]
    assert out["fallback_leaf"]["script"] == r["fallback_leaf"]
    assert out["ctv_leaf"]["script"] == r["ctv_leaf"]
    assert out["ctv_leaf"]["template_hash"] == r["ctv_leaf"][2:66]
    assert (out["merkle_root"], out["output_key"]) == (r["merkle_root"], r["output_key"])
    assert out["output_parity"] == r["output_parity"]
    assert out["coinbase_outputs"] == r["coinbase_outputs"]
    assert out["script_pubkey"] == r["coinbase_outputs"][0]["script"]
    assert out["payout_tx"]["hex"] == r["payout_tx"]["hex"]
    assert out["payout_tx"]["txid"] == r["payout_tx"]["txid"]
    assert (out["payout_tx"]["vsize"], out["payout_tx"]["fee"]) == (216, 432)
    assert out["set_settlement_mode"] == case["set_settlement_mode"]
    assert out["coinbase_output_constraints"] == case["coinbase_output_constraints"]
    tx = Tx.parse(bytes.fromhex(out["payout_tx"]["hex"]))
    assert out["pool"] == {"script": tx.outputs[0].script.hex(), "amount": r["pool_amount"]}
    assert [p["vout"] for p in out["payees"]] == [1, 2, 3]
    # the control blocks: c0|parity, the internal key, the sibling leaf's hash
    for leaf, other in (("ctv_leaf", "fallback_leaf"), ("fallback_leaf", "ctv_leaf")):
        cb = bytes.fromhex(out[leaf]["control_block"])
        assert cb[0] == 0xC0 | out["output_parity"] and cb[1:33].hex() == r["internal_key"]
        assert cb[33:].hex() == out[other]["leaf_hash"]


def test_without_ctv_leaf_and_with_a_funding_outpoint(small: Path) -> None:
    txid = "ab" * 32
    out = _ok(*_args(small, 312_500_000, "--funding", f"{txid}:0"))
    assert out["ctv_leaf"] is None
    assert len(bytes.fromhex(out["fallback_leaf"]["control_block"])) == 33
    tx = Tx.parse(bytes.fromhex(out["payout_tx"]["hex"]))
    assert tx.inputs[0].prevout.txid[::-1].hex() == txid
    assert out["payout_tx"]["funding"] == f"{txid}:0"
    _, msg = decode_frame(bytes.fromhex(out["set_settlement_mode"]))
    assert isinstance(msg, SetSettlementMode)
    assert (msg.mode, msg.musig2_fallback_timelock, msg.musig2_ctv_leaf) == (2, 244, False)


def test_pruned_payees_and_stdin(small: Path) -> None:
    case = next(c for c in cases("musig2") if c["name"] == "small-pruned")
    res = runner.invoke(
        app,
        [*_args(Path("-"), case["revenue"], "--fee-rate", "5", "--ctv-leaf")],
        input=small.read_text(),
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["pruned"] == case["result"]["pruned"] == [2]
    assert [p["index"] for p in out["payees"]] == [0, 1]
    assert out["payout_tx"]["hex"] == case["result"]["payout_tx"]["hex"]


@pytest.mark.parametrize(
    ("extra", "keys", "code"),
    [
        ((), KEYS[::-1], "musig2-invalid-params"),  # not in KeySort order
        ((), ["02" + "11" * 32], "musig2-invalid-committee-key"),  # not a curve point
        ((), ["zz"], "invalid-hex"),
        (("--fallback-timelock", "100"), KEYS, "musig2-invalid-fallback-timelock"),
        (("--fee-rate", "0"), KEYS, "musig2-invalid-fee-rate"),
    ],
)
def test_errors_are_specific(
    small: Path, extra: tuple[str, ...], keys: list[str], code: str
) -> None:
    res = runner.invoke(app, _args(small, 312_500_000, *extra, keys=keys))
    assert res.exit_code != 0
    assert isinstance(res.exception, ValidationError) and res.exception.code == code


def test_revenue_too_small_exits_2(small: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "payouts", *_args(small, 2_000)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "musig2-revenue-too-small" in proc.stderr
