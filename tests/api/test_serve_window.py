"""``payouts serve`` as a process (issue #11): the window's network difficulty comes from the
node by itself, and the window survives a clean stop (snapshot at shutdown: nothing replayed)
and a SIGKILL (the shares after the last snapshot replayed) exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from api import store
from payouts.service import PoolService
from payouts.settings import Settings
from tests.api.test_cli import _free_port, _wait_http


def _serve(tmp_path: Path, port: int, **env_extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(tmp_path), "PAYOUTS_API__PORT": str(port),
           **env_extra}
    for k in ("PAYOUTS_CONFIG", "PAYOUTS_DATABASE_URL"):
        env.pop(k, None)
    return subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--no-rate-limit"],
                            env=env, stderr=subprocess.PIPE, text=True)


def _shares(n: int, start: int, accounts: list[str]) -> dict[str, Any]:
    return {
        "key": [f"k{start + i}" for i in range(n)],
        "account": [accounts[i % len(accounts)] for i in range(n)],
        "worker": ["w"] * n, "difficulty": [1000 + i for i in range(n)],
        "job_id": ["j"] * n, "revenue": [312_500_000] * n,
        "time_ms": [1_700_000_000_000 + start + i for i in range(n)],
    }


def test_served_window_difficulty_and_restarts(tmp_path: Path) -> None:
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest"))
    token, _ = store.create_token(svc.engine, "ops", ["admin"])
    accounts = [f"m{i}" for i in range(5)]
    for i, a in enumerate(accounts):
        svc.register_miner(a, bytes.fromhex("5120") + bytes([i + 1]) * 32)
    svc.engine.dispose()
    auth = {"Authorization": f"Bearer {token}"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # A TIDES window of k·D = 8 × 5,000 difficulty: the pin a regtest pool sets.
    env = {"PAYOUTS_ACCOUNTING__SCHEME": "tides", "PAYOUTS_ACCOUNTING__PIN_DIFFICULTY": "5000"}

    proc = _serve(tmp_path, port, **env)
    try:
        _wait_http(proc, f"{base}/v1/health")
        win = httpx.get(f"{base}/v1/window", headers=auth).json()
        # From the node, by itself: the kernel's regtest nBits, exactly.
        assert win["network_difficulty"] == "65535/140737471578112"
        assert win["network_bits"] == "207fffff"
        assert (win["window_difficulty"], win["difficulty_pinned"]) == ("5000", True)
        r = httpx.post(f"{base}/v1/shares", json=_shares(60, 0, accounts), headers=auth)
        assert r.status_code == 200 and r.json()["accepted"] == 60
        before = httpx.get(f"{base}/v1/window", headers=auth).json()
        assert before["share_count"] == 39  # the last 39 (1021..1059) are the first to reach 40,000
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "network difficulty 4.65654e-10 (65535/140737471578112)" in err

    proc = _serve(tmp_path, port, **env)
    try:
        _wait_http(proc, f"{base}/v1/health")
        assert httpx.get(f"{base}/v1/window", headers=auth).json() == before
        r = httpx.post(f"{base}/v1/shares", json=_shares(25, 60, accounts), headers=auth)
        assert r.json()["accepted"] == 25
        after = httpx.get(f"{base}/v1/window", headers=auth).json()
    finally:
        proc.kill()  # SIGKILL: no shutdown snapshot
        _, err = proc.communicate(timeout=30)
    assert "restored from snapshot" in err and "0 shares and 0 chain events replayed" in err

    proc = _serve(tmp_path, port, **env)
    try:
        _wait_http(proc, f"{base}/v1/health")
        assert httpx.get(f"{base}/v1/window", headers=auth).json() == after
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "25 shares and 0 chain events replayed" in err
