"""The real ``payouts serve`` process with ``[jds]`` and ``[mining]`` enabled, driven over TCP
and Noise by the JD client library on both connections: a job declared to the JD server,
SetCustomMiningJob on an extended channel, a CPU-found share. The share is credited (GET
/v1/miners/{account}/shares) at the channel's difficulty; on regtest it is also a block, which
is recorded once even when PushSolution reports the same block again; after a restart the
credited share is still there (acknowledged means durable)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from api import store
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.tx.hashes import display_hex
from sv2.authority import authority_public_key, encode_authority_secret_key
from sv2.jdc import JobDeclarationClient, JobTemplate
from sv2.jdc.pool_channel import MiningRejected, PoolChannel
from sv2.messages.job_declaration import PushSolution
from tests.api.test_cli import _free_port, _wait_http

AUTHORITY = bytes.fromhex("42" * 32)
ACCOUNT = "miner-1"


def _serve(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "payouts", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)


def test_serve_credits_shares_and_records_the_block_once(tmp_path: Path) -> None:
    port, jds_port, mp_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(tmp_path), "PAYOUTS_API__PORT": str(port),
           "PAYOUTS_JDS__ENABLED": "true", "PAYOUTS_JDS__LISTEN": f"127.0.0.1:{jds_port}",
           "PAYOUTS_JDS__AUTHORITY_SECRET_KEY": encode_authority_secret_key(AUTHORITY),
           "PAYOUTS_MINING__ENABLED": "true", "PAYOUTS_MINING__LISTEN": f"127.0.0.1:{mp_port}",
           "PAYOUTS_MINING__INITIAL_DIFFICULTY": "3",
           "PAYOUTS_MINING__SHARE_FLUSH_INTERVAL_SEC": "0.05",
           "PAYOUTS_POOL__PAYOUT_ADDRESS": "bcrt1qcrl7uqxqllhqps8lacqvpllwqrq0lmsqqe4dfm"}
    env.pop("PAYOUTS_CONFIG", None)
    env.pop("PAYOUTS_DATABASE_URL", None)
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest"))
    token, _ = store.create_token(svc.engine, "ops", ["admin"])
    svc.register_miner(ACCOUNT, bytes.fromhex("0014" + "22" * 20))
    svc.engine.dispose()
    pk = authority_public_key(AUTHORITY)
    api = f"http://127.0.0.1:{port}"

    async def miner() -> tuple[bytes, int]:
        node = KernelNode()  # a fresh regtest chain: the same genesis tip as the server's
        try:
            template = JobTemplate.from_block_template(await node.block_template())
        finally:
            node.close()
        # A channel for an unknown account is refused (its shares could not be credited).
        try:
            async with PoolChannel("127.0.0.1", mp_port, pk, user_identity="stranger"):
                raise AssertionError("a stranger's channel was opened")
        except MiningRejected as exc:
            assert exc.code == "unknown-user"
        # The JD connection's extranonce size depends on the channel: opened in turn.
        async with PoolChannel("127.0.0.1", mp_port, pk, user_identity=ACCOUNT,  # noqa: SIM117
                               timeout=10) as pool:
            async with JobDeclarationClient("127.0.0.1", jds_port, pk, user_identifier=ACCOUNT,
                                            extranonce_size=pool.full_extranonce_size) as c:
                job = await c.declare_job(template)
                job_id = await pool.set_custom_job(job)
                assert await pool.mine(job, job_id, shares=1) == 1
                await pool.wait_answers(1)
                assert pool.channel.accepted == 1, pool.channel.errors
                assert pool.channel.accepted_difficulty == 3
                s = pool.submitted[0]
                # The same block through the JD connection: the node already has it.
                c._send(PushSolution(s.extranonce, template.prev_hash, s.nonce, s.ntime,
                                     template.bits, s.version))
                await c.drain()
                await asyncio.sleep(0.5)
                return s.block_hash, pool.channel.accepted_difficulty

    proc = _serve(env)
    try:
        _wait_http(proc, f"{api}/v1/health")
        try:
            block_hash, difficulty = asyncio.run(miner())
        except BaseException:
            proc.terminate()
            print(proc.communicate(timeout=20)[1][-5000:])
            raise
        shares = httpx.get(f"{api}/v1/miners/{ACCOUNT}/shares", timeout=5).json()
        assert shares["miner_shares"] == 1 and shares["miner_difficulty"] == str(difficulty)
        blocks = httpx.get(f"{api}/v1/blocks", headers={"Authorization": f"Bearer {token}"},
                           timeout=5).json()
        assert [b["block_hash"] for b in blocks] == [display_hex(block_hash)]
        metrics = httpx.get(f"{api}/metrics", headers={"Authorization": f"Bearer {token}"},
                            timeout=5).text
        assert 'payouts_sv2_events_total{event="shares-accepted",role="mining"} 1.0' in metrics
        assert 'payouts_sv2_channels{role="mining"}' in metrics
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"Mining Protocol server listening on 127.0.0.1:{mp_port}" in err
    assert "found by a share" in err
    # Restarted: the acknowledged share is still credited.
    proc = _serve(env)
    try:
        _wait_http(proc, f"{api}/v1/health")
        shares = httpx.get(f"{api}/v1/miners/{ACCOUNT}/shares", timeout=5).json()
        assert shares["miner_shares"] == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_jdc_run_mines_declared_jobs_on_the_pool(tmp_path: Path) -> None:
    """``payouts jdc run --pool``: the CLI declares to the served JD server and mines the job
    on the served Mining Protocol endpoint; its shares are credited over HTTP."""
    port, jds_port, mp_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(tmp_path / "pool"),
           "PAYOUTS_API__PORT": str(port),
           "PAYOUTS_JDS__ENABLED": "true", "PAYOUTS_JDS__LISTEN": f"127.0.0.1:{jds_port}",
           "PAYOUTS_JDS__AUTHORITY_SECRET_KEY": encode_authority_secret_key(AUTHORITY),
           "PAYOUTS_MINING__ENABLED": "true", "PAYOUTS_MINING__LISTEN": f"127.0.0.1:{mp_port}",
           "PAYOUTS_MINING__INITIAL_DIFFICULTY": "5",
           "PAYOUTS_POOL__PAYOUT_ADDRESS": "bcrt1qcrl7uqxqllhqps8lacqvpllwqrq0lmsqqe4dfm"}
    env.pop("PAYOUTS_CONFIG", None)
    env.pop("PAYOUTS_DATABASE_URL", None)
    svc = PoolService(Settings(data_dir=tmp_path / "pool", network="regtest"))
    svc.register_miner(ACCOUNT, bytes.fromhex("0014" + "33" * 20))
    svc.engine.dispose()
    proc = _serve(env)
    try:
        _wait_http(proc, f"http://127.0.0.1:{port}/v1/health")
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
        cli_env["PAYOUTS_DATA_DIR"] = str(tmp_path / "jdc")
        out = subprocess.run(
            [sys.executable, "-m", "payouts", "jdc", "run", "--server", f"127.0.0.1:{jds_port}",
             "--authority-key", authority_public_key(AUTHORITY).hex(), "--node", "kernel",
             "--pool", f"127.0.0.1:{mp_port}", "--user", ACCOUNT, "--once"],
            env=cli_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        mining = result["mining"]
        assert mining["shares_submitted"] == 1 and mining["accepted"] == 1
        assert mining["accepted_difficulty"] == 5 and mining["errors"] == {}
        assert "SetCustomMiningJob.Success" in out.stderr
        shares = httpx.get(f"http://127.0.0.1:{port}/v1/miners/{ACCOUNT}/shares",
                           timeout=5).json()
        assert shares["miner_shares"] == 1 and shares["miner_difficulty"] == "5"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
