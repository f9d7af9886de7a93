"""`payouts ctv hash` and `payouts ctv tree` through the real console entry point."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from payouts.cli import main
from payouts.distribution.jsonio import distribution_from_json
from payouts.settlement.ctv import CtvParams, build_ctv_fanout
from payouts.tx.transaction import Tx
from sv2.messages import SetSettlementMode, decode_frame

DOC = {
    "distribution_id": 7,
    "pool_payout": {"script": "0014" + "11" * 20, "weight": 10},
    "payouts": [
        {"script": "5120" + "22" * 32, "weight": 30},
        {"script": "76a914" + "33" * 20 + "88ac", "weight": 60},
        {"script": "0014" + "44" * 20, "weight": 1},
        {"script": "5120" + "55" * 32, "weight": 25},
    ],
    "additional_outputs": [{"script": "6a04cafebabe", "amount": 0}],
}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``payouts ctv ARGS`` through the console entry point ``payouts.cli.main``, in-process
    (a subprocess per call costs ~1.5 s of imports); exit codes are main()'s."""

    def invoke(*args: str, stdin: str | None = None) -> Result:
        monkeypatch.setattr(sys, "argv", ["payouts", "ctv", *args])
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return invoke


def test_console_script_exit_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "payouts", "ctv", "hash", "zz"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "invalid-hex" in proc.stderr


def test_hash_matches_bip119_vectors(vectors: Path, run: Callable[..., Result]) -> None:
    cases = [
        c
        for c in json.loads((vectors / "bip-0119" / "ctvhash.json").read_text())
        if isinstance(c, dict)
    ][:3]
    for case in cases:
        for index, expected in zip(case["spend_index"], case["result"], strict=True):
            extra = (
                []
                if index < len(Tx.parse(bytes.fromhex(case["hex_tx"])).inputs)
                else ["--any-index"]
            )
            proc = run("hash", case["hex_tx"], "--input-index", str(index), *extra)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip() == expected


def test_hash_errors_are_specific(run: Callable[..., Result]) -> None:
    tx = "02000000010000000000000000000000000000000000000000000000000000000000000000"
    tx += "00000000" + "00ffffffff" + "01" + "00" * 8 + "00" + "00000000"
    assert run("hash", tx).returncode == 0
    cases: list[tuple[tuple[str, ...], str]] = [
        (("hash", "zz"), "invalid-hex"),
        (("hash", "0200"), "tx-decode-error"),
        (("hash", tx, "--input-index", "1"), "invalid-input-index"),
        (("hash", tx, "--input-index", "-1"), "invalid-input-index"),
        (("hash", tx, "--input-index", str(1 << 32), "--any-index"), "invalid-input-index"),
    ]
    for args, code in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert code in proc.stderr


def test_tree_prints_the_settlement(tmp_path: Path, run: Callable[..., Result]) -> None:
    f = tmp_path / "dist.json"
    f.write_text(json.dumps(DOC))
    proc = run("tree", str(f), "--revenue", "5000000", "--arity", "2", "--form", "taproot")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    fan = build_ctv_fanout(
        distribution_from_json(DOC), 5_000_000, CtvParams(arity=2, form="taproot")
    )
    assert out["coinbase_outputs"] == [
        {"script": o.script.hex(), "amount": o.value} for o in fan.coinbase_outputs
    ]
    assert [t["hex"] for t in out["txs"]] == [t.tx.serialize().hex() for t in fan.txs]
    assert [t["level"] for t in out["txs"]] == [0, 1, 2, 2]
    assert out["total_vbytes"] == fan.total_vbytes == sum(t["vsize"] for t in out["txs"])
    txids = [t["txid"] for t in out["txs"]]
    for p, e in zip(out["payees"], fan.payees, strict=True):
        assert p["amount"] == e.output.value and p["vout"] == e.vout
        assert p["path"] == [txids[i] for i in e.path]
    assert out["pool"]["amount"] + sum(p["amount"] for p in out["payees"]) == 5_000_000
    # stdin and options
    proc = run(
        "tree", "-", "-T", "5000000", "--fee-rate", "2", "--no-anchor", stdin=json.dumps(DOC)
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["anchor_value"] is None and out["fees"] == 2 * out["total_vbytes"]
    assert out["tx_version"] == 3 and out["arity"] is None


def test_tree_errors_are_specific(tmp_path: Path, run: Callable[..., Result]) -> None:
    f = tmp_path / "dist.json"
    f.write_text("{not json")
    for file_args, code in [
        (("tree", str(tmp_path / "missing.json"), "-T", "5000"), "bad-file"),
        (("tree", str(f), "-T", "5000"), "invalid-json"),
    ]:
        proc = run(*file_args)
        assert proc.returncode == 2 and code in proc.stderr, proc.stderr
    f.write_text(json.dumps(DOC))
    cases: list[tuple[tuple[str, ...], str]] = [
        (("tree", str(f), "-T", "5000000", "--arity", "1"), "ctv-invalid-params"),
        (("tree", str(f), "-T", "5000000", "--no-anchor"), "ctv-invalid-params"),
        (("tree", str(f), "-T", "3000", "--fee-rate", "50"), "ctv-revenue-too-small"),
        (("tree", str(f), "-T", "5000000", "--funding", "abc:0"), "invalid-outpoint"),
    ]
    for args, code in cases:
        proc = run(*args)
        assert proc.returncode == 2 and code in proc.stderr, (args, proc.stderr)


def test_tree_help_mentions_activation(run: Callable[..., Result]) -> None:
    proc = run("tree", "--help")
    assert proc.returncode == 0
    assert "CTV" in proc.stdout and "active" in proc.stdout


def test_tree_sequence_and_locktime(tmp_path: Path, run: Callable[..., Result]) -> None:
    """--sequence/--locktime are the message's ctv_sequence/ctv_locktime: committed by CTV,
    so they are in every tx and change every template hash."""
    f = tmp_path / "dist.json"
    f.write_text(json.dumps(DOC))
    base = run("tree", str(f), "-T", "5000000", "--arity", "2")
    proc = run(
        "tree", str(f), "-T", "5000000", "--arity", "2", "--sequence", "0xfffffffe",
        "--locktime", "800000",
    )
    assert base.returncode == 0 and proc.returncode == 0, proc.stderr
    out, plain = json.loads(proc.stdout), json.loads(base.stdout)
    assert (out["sequence"], out["locktime"]) == (0xFFFFFFFE, 800_000)
    assert (plain["sequence"], plain["locktime"]) == (0xFFFFFFFF, 0)
    fan = build_ctv_fanout(
        distribution_from_json(DOC),
        5_000_000,
        CtvParams(arity=2, sequence=0xFFFFFFFE, locktime=800_000),
    )
    assert [t["hex"] for t in out["txs"]] == [t.tx.serialize().hex() for t in fan.txs]
    for t in out["txs"]:
        tx = Tx.parse(bytes.fromhex(t["hex"]))
        assert tx.inputs[0].sequence == 0xFFFFFFFE and tx.locktime == 800_000
    assert {t["template_hash"] for t in out["txs"]}.isdisjoint(
        t["template_hash"] for t in plain["txs"]
    )
    # the SetSettlementMode frame announcing these parameters (0x4003) carries them
    frame, msg = decode_frame(bytes.fromhex(out["set_settlement_mode"]))
    assert isinstance(msg, SetSettlementMode) and frame.extension_type == 0x4003
    assert (msg.distribution_id, msg.mode, msg.ctv_arity) == (7, 1, 2)
    assert (msg.ctv_sequence, msg.ctv_locktime) == (0xFFFFFFFE, 800_000)
    assert run("tree", str(f), "-T", "5000000", "--sequence", "10").returncode == 0
    for bad in (("--sequence", "0x100000000"), ("--locktime", "-1"), ("--sequence", "ten")):
        proc = run("tree", str(f), "-T", "5000000", *bad)
        assert proc.returncode == 2 and "ctv-invalid-params" in proc.stderr, (bad, proc.stderr)
