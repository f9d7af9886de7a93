"""``payouts tokens create/list/revoke`` and ``payouts serve`` (a real uvicorn process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from payouts.cli import app
from payouts.cli.tokens_cmd import parse_duration


def test_parse_duration() -> None:
    assert parse_duration("30d").days == 30 and parse_duration("90m").seconds == 5400
    for bad in ("0d", "3w", "d", ""):
        with pytest.raises(Exception, match="expires-in"):
            parse_duration(bad)


def test_tokens_create_list_revoke(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PAYOUTS_DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'p.db'}")
    monkeypatch.delenv("PAYOUTS_CONFIG", raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["tokens", "create", "--name", "ingest", "--scope", "shares:write",
                            "--scope", "read", "--expires-in", "30d"])
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip().splitlines()[0]
    assert secret.startswith("pt_") and len(secret) > 40
    r = runner.invoke(app, ["tokens", "list"])
    assert "ingest" in r.stdout and "read shares:write" in r.stdout and "active" in r.stdout
    assert secret not in r.stdout
    r = runner.invoke(app, ["tokens", "revoke", "ingest"])
    assert r.exit_code == 0 and "revoked" in runner.invoke(app, ["tokens", "list"]).stdout
    r = runner.invoke(app, ["tokens", "create", "--name", "x", "--scope", "root"])
    assert r.exit_code != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_the_api(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(tmp_path), "PAYOUTS_API__PORT": str(port),
           "PAYOUTS_JDS__ENABLED": "true"}
    env.pop("PAYOUTS_CONFIG", None)
    env.pop("PAYOUTS_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "payouts", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert r.json() == {"status": "ok", "network": "regtest"}
        assert r.headers["content-type"] == "application/json"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "does not start the JD server" in err
    assert '"path": "/v1/health"' in err  # the JSON access line
