"""`payouts distribution amounts` end to end through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DOC = {
    "pool_payout": {"script": "0014" + "11" * 20, "weight": 10},
    "payouts": [
        {"script": "5120" + "22" * 32, "weight": 30, "dust_limit": 330},
        {"script": "76a914" + "33" * 20 + "88ac", "weight": 60, "dust_limit": 546},
        {"script": "0014" + "44" * 20, "weight": 1, "dust_limit": 294},
    ],
    "additional_outputs": [{"script": "6a04cafebabe", "amount": 0}],
}


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payouts", *args], input=stdin, capture_output=True, text=True
    )


def test_amounts_prints_outputs_in_wire_order(tmp_path: Path) -> None:
    f = tmp_path / "dist.json"
    f.write_text(json.dumps(DOC))
    proc = run("distribution", "amounts", str(f), "--revenue", "10100")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # W = 101: 2999 (30*10100/101 = 3000 -> exact 3000), 6000, 100 (< 294: pruned)
    assert out == {
        "outputs": [
            {"script": "0014" + "11" * 20, "amount": 1100},
            {"script": "5120" + "22" * 32, "amount": 3000},
            {"script": "76a914" + "33" * 20 + "88ac", "amount": 6000},
            {"script": "6a04cafebabe", "amount": 0},
        ]
    }


def test_amounts_reads_stdin_and_fills_default_dust() -> None:
    doc = {"pool_payout": DOC["pool_payout"], "payouts": [{"script": "0014" + "55" * 20,
                                                            "weight": 1}]}
    proc = run("distribution", "amounts", "-", "-T", "588", stdin=json.dumps(doc))
    assert proc.returncode == 0, proc.stderr
    # 1*588/11 = 53 < 294 (P2WPKH default dust): pruned, everything to the pool
    assert json.loads(proc.stdout)["outputs"] == [{"script": "0014" + "11" * 20, "amount": 588}]


def test_bad_input_gets_a_specific_error(tmp_path: Path) -> None:
    f = tmp_path / "dist.json"
    f.write_text(json.dumps(DOC))
    proc = run("distribution", "amounts", str(f), "--revenue", "0")
    assert proc.returncode == 2 and "zero-revenue" in proc.stderr
    bad = dict(DOC, pool_payout={"script": "zz", "weight": 1})
    f.write_text(json.dumps(bad))
    proc = run("distribution", "amounts", str(f), "--revenue", "5")
    assert proc.returncode == 2 and "pool_payout.script is not valid hex" in proc.stderr
    f.write_text("{not json")
    proc = run("distribution", "amounts", str(f), "--revenue", "5")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = run("distribution", "amounts", str(tmp_path / "missing.json"), "--revenue", "5")
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_help_explains_itself() -> None:
    proc = run("distribution", "amounts", "--help")
    assert proc.returncode == 0
    assert "PR #203" in proc.stdout and "--revenue" in proc.stdout


def test_fixed_outputs_equal_to_revenue_are_refused(tmp_path: Path) -> None:
    """PR #203 (2026-09): F >= T is unsatisfiable; F == T no longer prints a 0-sat pool output."""
    doc = dict(DOC, additional_outputs=[{"script": "6a04cafebabe", "amount": 10100}])
    f = tmp_path / "dist.json"
    f.write_text(json.dumps(doc))
    proc = run("distribution", "amounts", str(f), "--revenue", "10100")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unsatisfiable-distribution" in proc.stderr and "F >= T" in proc.stderr
    proc = run("distribution", "amounts", str(f), "--revenue", "10101")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"][0] == {"script": "0014" + "11" * 20, "amount": 1}
