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


def _wait_http(proc: subprocess.Popen[str], url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_serve_starts_the_api(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(tmp_path), "PAYOUTS_API__PORT": str(port)}
    env.pop("PAYOUTS_CONFIG", None)
    env.pop("PAYOUTS_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "payouts", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        r = _wait_http(proc, f"http://127.0.0.1:{port}/v1/health")
        assert r.json() == {"status": "ok", "network": "regtest"}
        assert r.headers["content-type"] == "application/json"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "JD server" not in err  # not configured, not started
    assert '"path": "/v1/health"' in err  # the JSON access line


def test_serve_runs_the_jd_server_and_pushes_published_distributions(tmp_path: Path) -> None:
    """[jds] enabled: the JD server runs in the API process; a distribution published through
    POST /v1/distributions reaches a connected JD client over Noise."""
    import asyncio

    from api import store
    from payouts.service import PoolService
    from payouts.settings import Settings
    from sv2.authority import authority_public_key, encode_authority_secret_key
    from sv2.jdc import JobDeclarationClient

    port, jds_port = _free_port(), _free_port()
    authority = bytes.fromhex("42" * 32)
    pool = "bcrt1qcrl7uqxqllhqps8lacqvpllwqrq0lmsqqe4dfm"
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(tmp_path), "PAYOUTS_API__PORT": str(port),
           "PAYOUTS_JDS__ENABLED": "true", "PAYOUTS_JDS__LISTEN": f"127.0.0.1:{jds_port}",
           "PAYOUTS_JDS__AUTHORITY_SECRET_KEY": encode_authority_secret_key(authority),
           "PAYOUTS_POOL__PAYOUT_ADDRESS": pool}
    env.pop("PAYOUTS_CONFIG", None)
    env.pop("PAYOUTS_DATABASE_URL", None)
    # An operator token, made through the same store the server will open.
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest"))
    token, _ = store.create_token(svc.engine, "ops", ["admin"])
    svc.engine.dispose()
    proc = subprocess.Popen([sys.executable, "-m", "payouts", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)

    async def client_side() -> tuple[int, int]:
        async with JobDeclarationClient("127.0.0.1", jds_port,
                                        authority_public_key(authority)) as c:
            assert c.distribution is not None
            first = c.distribution.distribution_id
            r = await asyncio.to_thread(
                httpx.post, f"http://127.0.0.1:{port}/v1/distributions",
                json={"estimated_revenue": 5_000_000_000},
                headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code in (200, 201), r.text
            pushed = await c.wait_for_distribution(after=first)
            return first, pushed.distribution_id

    try:
        _wait_http(proc, f"http://127.0.0.1:{port}/v1/health")
        first, second = asyncio.run(client_side())
        assert second == first + 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert f"JD server listening on 127.0.0.1:{jds_port}" in err

