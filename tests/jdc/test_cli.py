"""``payouts jdc``: constraints from a distribution file, and ``run --once`` as a real process
against a JDS in another process (each with its own embedded kernel node at regtest genesis, so
the JDS's node judges the block the client mined)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from payouts.cli import app
from payouts.distribution.jsonio import distribution_to_json
from sv2.jdc import constraints_for
from tests.jdc.helpers import make_distribution

ROOT = Path(__file__).resolve().parents[2]
PAYOUTS = Path(sys.executable).with_name("payouts")


def test_constraints_command(tmp_path: Path) -> None:
    d = make_distribution(4, payees=3)
    f = tmp_path / "d.json"
    f.write_text(json.dumps(distribution_to_json(d)))
    res = CliRunner().invoke(app, ["jdc", "constraints", str(f)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    c = constraints_for(d)
    assert out["coinbase_output_max_additional_size"] == c.max_additional_size
    assert out["coinbase_output_max_additional_sigops"] == 0 and out["distribution_id"] == 4
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert CliRunner().invoke(app, ["jdc", "constraints", str(bad)]).exit_code != 0


def test_run_once_against_jds_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    srv = subprocess.Popen(
        [sys.executable, "-m", "tests.jdc.jds_process"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        info = json.loads(srv.stdout.readline())
        args = [
            str(PAYOUTS),
            "jdc",
            "run",
            "--server",
            f"{info['host']}:{info['port']}",
            "--authority-key",
            info["authority_key"],
            "--node",
            "kernel",
            "--once",
        ]
        res = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["pushed"] and out["declared"]["distribution_id"] == 1
        assert "extensions negotiated: 0x0003, 0x4003" in res.stderr
        accepted = json.loads(srv.stdout.readline())
        assert accepted["block_accepted"] == out["block_hash"] and accepted["height"] == 1
        # A second fresh client is one block behind the JDS: rejected -> fallback (exit 3),
        # and it mines its own template solo on its own node.
        res2 = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert res2.returncode == 3, res2.stderr
        out2 = json.loads(res2.stdout)
        assert out2["fallback"]["code"] == "stale-chain-tip" and out2["solo"]["accepted"]
        # A wrong authority key never gets past the handshake.
        bad = [*args]
        bad[bad.index("--authority-key") + 1] = (
            "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        )
        res3 = subprocess.run(bad, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert res3.returncode == 2 and "sv2-handshake-failed" in res3.stderr
    finally:
        srv.terminate()
        srv.wait(10)
