"""``payouts jdc run --tp`` as real processes: a JDS (tests.jdc.jds_process) and our Template
Provider (``payouts jdc template-provider``), each on its own embedded kernel node at regtest
genesis; the client declares the TP's template, and both nodes accept the block it mined."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from payouts.cli import app
from payouts.errors import PayoutsError

ROOT = Path(__file__).resolve().parents[2]
PAYOUTS = Path(sys.executable).with_name("payouts")


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], Any]:
    p = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    return p, json.loads(p.stdout.readline())


def test_run_once_with_template_provider() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jds, jinfo = _start([sys.executable, "-m", "tests.jdc.jds_process"], env)
    tp, tinfo = _start(
        [str(PAYOUTS), "jdc", "template-provider", "--listen", "127.0.0.1:0", "--node", "kernel"],
        env,
    )
    try:
        args = [
            str(PAYOUTS),
            "jdc",
            "run",
            "--server",
            f"{jinfo['host']}:{jinfo['port']}",
            "--authority-key",
            jinfo["authority_key"],
            "--tp",
            f"{tinfo['host']}:{tinfo['port']}",
            "--tp-authority-key",
            tinfo["authority_key"],
            "--once",
        ]
        res = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["pushed"] and out["submitted_to_tp"] == 1
        assert out["declared"]["distribution_id"] == 1 and out["declared"]["height"] == 1
        assert "CoinbaseOutputConstraints sent to the Template Provider: size=179" in res.stderr
        assert "(TP template 1)" in res.stderr
        assert tp.stdout is not None and jds.stdout is not None
        by_tp = json.loads(tp.stdout.readline())
        by_jds = json.loads(jds.stdout.readline())
        assert by_tp["accepted"] and by_tp["block"] == out["block_hash"] == by_jds["block_accepted"]
        # The TP's key is not the pool's: a client that mixes them up stops at the handshake.
        bad = [*args]
        bad[bad.index("--tp-authority-key") + 1] = jinfo["authority_key"]
        res2 = subprocess.run(bad, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert res2.returncode == 2 and "sv2-handshake-failed" in res2.stderr
    finally:
        for p in (jds, tp):
            p.terminate()
            p.wait(10)


def _code(args: list[str]) -> str:
    """The engine error a command raises (``payouts`` prints it as ``error: ...``, exit 2)."""
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, PayoutsError), r.output
    return f"{r.exception.code}: {r.exception}"


def test_tp_option_errors() -> None:
    base = ["jdc", "run", "--server", "127.0.0.1:1", "--authority-key", "00" * 32]
    key = ["--tp-authority-key", "00" * 32]
    assert _code([*base, "--tp", "127.0.0.1:2"]).startswith("missing-tp-authority-key")
    assert _code([*base, "--tp", "127.0.0.1:2", *key, "--per-job"]).startswith("invalid-options")
    assert _code([*base, *key]).startswith("invalid-options")
    assert "--tp must be HOST:PORT" in _code([*base, "--tp", "nohost", *key])
    helptext = CliRunner().invoke(app, ["jdc", "run", "--help"]).output
    assert "--tp-authority-key" in helptext and "Template Provider" in helptext
