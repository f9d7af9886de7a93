"""Coinbase-only mode (sv2-spec 06-Job-Declaration-Protocol.md §6.1; PR #203 §2, §6) against the
real ``payouts serve`` over TCP + Noise: a JD client set up without ``DECLARE_TX_DATA`` sends
its ``AllocateMiningJobToken.Success`` token straight into ``SetCustomMiningJob`` with the
``distribution_id`` TLV; the pool checks the coinbase against the distribution alone. Shares on
an accepted job are credited (at no more than the pool's own template's T); every tampered
job is refused with its code and changes no balance; the block found on a Coinbase-only job is
recorded once. Also ``payouts jdc run --mode coinbase-only --pool``, and the pure parts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api import store
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.modes import SettlementMode
from payouts.store.models import Share
from payouts.tx.coinbase import HALVING_INTERVAL_REGTEST
from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import display_hex
from payouts.tx.script import bip34_height
from payouts.tx.txout import TxOut
from sv2.authority import authority_public_key, encode_authority_secret_key
from sv2.block_rebuild import assemble_block
from sv2.coinbase_only import bip34_height_of, credited_revenue
from sv2.distribution_book import Published
from sv2.jdc import JobDeclarationClient, JobTemplate, build_set_custom_mining_job
from sv2.jdc.pool_channel import MiningRejected, PoolChannel
from sv2.jdc.session import DeclaredJob
from sv2.messages.mining import SetCustomMiningJob
from sv2.messages.payouts import DistributionIdTlv
from sv2.mining.pool_job import build_pool_job
from tests.api.test_cli import _free_port, _wait_http
from tests.jdc.helpers import make_distribution
from tests.mining.test_serve_mining import _serve

AUTHORITY = bytes.fromhex("43" * 32)
ACCOUNT, OTHER = "miner-1", "miner-2"
DIFFICULTY = 3


def _env(tmp_path: Path, port: int, jds_port: int, mp_port: int) -> dict[str, str]:
    env = {**os.environ, "PAYOUTS_DATA_DIR": str(tmp_path), "PAYOUTS_API__PORT": str(port),
           "PAYOUTS_JDS__ENABLED": "true", "PAYOUTS_JDS__LISTEN": f"127.0.0.1:{jds_port}",
           "PAYOUTS_JDS__AUTHORITY_SECRET_KEY": encode_authority_secret_key(AUTHORITY),
           "PAYOUTS_MINING__ENABLED": "true", "PAYOUTS_MINING__LISTEN": f"127.0.0.1:{mp_port}",
           "PAYOUTS_MINING__INITIAL_DIFFICULTY": str(DIFFICULTY),
           "PAYOUTS_MINING__SHARE_FLUSH_INTERVAL_SEC": "0.05",
           "PAYOUTS_POOL__PAYOUT_ADDRESS": "bcrt1qcrl7uqxqllhqps8lacqvpllwqrq0lmsqqe4dfm"}
    env.pop("PAYOUTS_CONFIG", None)
    env.pop("PAYOUTS_DATABASE_URL", None)
    return env


def _tampered(msg: SetCustomMiningJob, outputs: list[TxOut] | None = None,
              **fields: Any) -> SetCustomMiningJob:
    if outputs is not None:
        fields["coinbase_tx_outputs"] = ser_compact_size(len(outputs)) + b"".join(
            o.serialize() for o in outputs)
    return dataclasses.replace(msg, **fields)


async def _refused(pool: PoolChannel, msg: SetCustomMiningJob) -> str:
    try:
        await pool.send_custom_job(dataclasses.replace(msg, request_id=pool.next_request_id()))
    except MiningRejected as exc:
        return exc.code
    raise AssertionError("the pool accepted a tampered Coinbase-only job")


def _message(pool: PoolChannel, job: DeclaredJob) -> SetCustomMiningJob:
    return build_set_custom_mining_job(job, channel_id=pool.channel.channel_id,
                                       request_id=pool.next_request_id(), coinbase_only=True)


def test_coinbase_only_jobs_over_tcp_against_serve(tmp_path: Path) -> None:
    port, jds_port, mp_port = _free_port(), _free_port(), _free_port()
    env = _env(tmp_path, port, jds_port, mp_port)
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest"))
    token, _ = store.create_token(svc.engine, "ops", ["admin"])
    svc.register_miner(ACCOUNT, bytes.fromhex("0014" + "22" * 20))
    svc.register_miner(OTHER, bytes.fromhex("0014" + "44" * 20))
    svc.engine.dispose()
    pk = authority_public_key(AUTHORITY)
    api = f"http://127.0.0.1:{port}"
    seen: dict[str, Any] = {}

    def shares() -> dict[str, Any]:
        r: dict[str, Any] = httpx.get(f"{api}/v1/miners/{ACCOUNT}/shares", timeout=5).json()
        return r

    async def miner() -> None:
        node = KernelNode()  # a fresh regtest chain: the same genesis tip as the server's
        try:
            t1 = JobTemplate.from_block_template(await node.block_template())
            async with PoolChannel("127.0.0.1", mp_port, pk, user_identity=ACCOUNT) as pool, \
                    PoolChannel("127.0.0.1", mp_port, pk, user_identity=OTHER) as other, \
                    JobDeclarationClient("127.0.0.1", jds_port, pk, user_identifier=ACCOUNT,
                                         extranonce_size=pool.full_extranonce_size,
                                         coinbase_only=True) as c, \
                    JobDeclarationClient("127.0.0.1", jds_port, pk, user_identifier=ACCOUNT,
                                         extranonce_size=pool.full_extranonce_size) as full:
                d1 = c.distribution
                assert d1 is not None
                # A Full-Template token used without a declaration.
                ft = (await full.allocate_token()).mining_job_token
                job = await c.coinbase_only_job(t1)
                msg = _message(pool, job)
                assert await _refused(pool, _tampered(msg, mining_job_token=ft)) == (
                    "invalid-mining-job-token")
                # Another user's channel with this user's token.
                m_other = dataclasses.replace(msg, channel_id=other.channel.channel_id)
                assert await _refused(other, m_other) == "invalid-mining-job-token"
                # The distribution_id TLV left out.
                assert await _refused(pool, _tampered(msg, tlvs=())) == (
                    "invalid-payout-distribution")
                outs = list(job.coinbase.outputs)
                # A wrong amount: 1,000 sat of the pool output moved to an output of its own.
                moved = [TxOut(outs[0].value - 1000, outs[0].script),
                         TxOut(1000, bytes.fromhex("0014" + "22" * 20)), *outs[1:]]
                assert await _refused(pool, _tampered(msg, moved)) == (
                    "invalid-payout-distribution")
                # The witness commitment moved off the end.
                assert await _refused(pool, _tampered(msg, outs[::-1])) == (
                    "invalid-job-param-value-coinbase_tx_outputs")
                # A never-published distribution.
                assert await _refused(pool, _tampered(msg, tlvs=(DistributionIdTlv(999),))) == (
                    "invalid-payout-distribution")
                assert shares()["miner_shares"] == 0
                # Every refusal above left the token unspent: the untampered message passes.
                job_id = await pool.send_custom_job(msg)
                assert await pool.mine(job, job_id, shares=1) == 1
                await pool.wait_answers(1)
                assert pool.channel.accepted == 1, pool.channel.errors
                s = pool.submitted[0]
                seen["block"] = s.block_hash
                # Tokens are single use.
                assert await _refused(pool, msg) == "invalid-mining-job-token"
                # The block (every regtest share is one) settles distribution 1: the pool
                # publishes a fresh one. Our node gets the block too, for the next template.
                raw_cb = job.coinbase.parts.serialize(s.extranonce)
                block = assemble_block(raw_cb, [], [], version=s.version, prev_hash=t1.prev_hash,
                                       ntime=s.ntime, bits=t1.bits, nonce=s.nonce)
                assert block.block_hash == s.block_hash
                assert await node.submit_block(block.serialize()) is None
                d2 = await c.wait_for_distribution(after=d1.distribution_id)
                t2 = JobTemplate.from_block_template(await node.block_template())
                assert t2.height == 2
                # A job on the distribution the settlement replaced.
                stale = await c.coinbase_only_job(t2, distribution=d1)
                assert await _refused(pool, _message(pool, stale)) == "stale-payout-distribution"
                # Outputs reordered: a 0-value output moved before the payout outputs (PR #203
                # §5 fixes the order: pool payout, payouts, additional, then 0-value ones).
                job2 = await c.coinbase_only_job(t2, distribution=d2)
                o2 = list(job2.coinbase.outputs)
                reordered = [TxOut(0, b"\x6a\x01\x2a"), *o2]
                assert await _refused(pool, _tampered(_message(pool, job2), reordered)) == (
                    "invalid-payout-distribution")
                assert shares()["miner_shares"] == 1
                # A coinbase claiming 1,000 sat of fees its block does not have: the payouts
                # are exact for that T, so it is accepted, but its shares are credited at the
                # pool's own template's T (the block itself is bad-cb-amount).
                rich = dataclasses.replace(t2, revenue=t2.revenue + 1000)
                job3 = await c.coinbase_only_job(rich, distribution=d2)
                jid3 = await pool.set_custom_job(job3, coinbase_only=True)
                assert await pool.mine(job3, jid3, shares=1) == 1
                await pool.wait_answers(2)
                assert pool.channel.accepted == 2, pool.channel.errors
                seen["t"] = (t1.revenue, t2.revenue)
        finally:
            node.close()

    proc = _serve(env)
    try:
        _wait_http(proc, f"{api}/v1/health")
        try:
            asyncio.run(miner())
        except BaseException:
            proc.terminate()
            print(proc.communicate(timeout=20)[1][-5000:])
            raise
        t1, t2 = seen["t"]
        # TIDES on regtest: the window (k x the network difficulty) holds the newest share,
        # value-weighted by the T it was credited at: t2, not the t2 + 1,000 it claimed.
        assert shares()["miner_weight"] == str(DIFFICULTY * t2)
        blocks = httpx.get(f"{api}/v1/blocks", headers={"Authorization": f"Bearer {token}"},
                           timeout=5).json()
        assert [b["block_hash"] for b in blocks] == [display_hex(seen["block"])]
        metrics = httpx.get(f"{api}/metrics", headers={"Authorization": f"Bearer {token}"},
                            timeout=5).text
        assert ('payouts_sv2_events_total{event="coinbase-only-jobs-accepted",role="mining"} 2.0'
                in metrics)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "found by a share" in err
    assert "bad-cb-amount" in err  # the rich job's block: the node refused it
    # Both shares are stored, each at the revenue it was credited at.
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest"))
    try:
        with svc.engine.connect() as conn:
            stored = conn.execute(select(Share.revenue).order_by(Share.id)).scalars().all()
    finally:
        svc.engine.dispose()
    assert stored == [t1, t2]


def test_jdc_run_coinbase_only_on_the_pool(tmp_path: Path) -> None:
    """``payouts jdc run --mode coinbase-only --pool``: no declaration; its share is credited
    over HTTP."""
    port, jds_port, mp_port = _free_port(), _free_port(), _free_port()
    env = _env(tmp_path / "pool", port, jds_port, mp_port)
    svc = PoolService(Settings(data_dir=tmp_path / "pool", network="regtest"))
    svc.register_miner(ACCOUNT, bytes.fromhex("0014" + "33" * 20))
    svc.engine.dispose()
    proc = _serve(env)
    try:
        _wait_http(proc, f"http://127.0.0.1:{port}/v1/health")
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
        cli_env["PAYOUTS_DATA_DIR"] = str(tmp_path / "jdc")
        args = [sys.executable, "-m", "payouts", "jdc", "run", "--server",
                f"127.0.0.1:{jds_port}", "--authority-key", authority_public_key(AUTHORITY).hex(),
                "--node", "kernel", "--user", ACCOUNT, "--once", "--mode", "coinbase-only"]
        bad = subprocess.run(args, env=cli_env, capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "--mode coinbase-only needs --pool" in bad.stderr
        out = subprocess.run([*args, "--pool", f"127.0.0.1:{mp_port}"], env=cli_env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["mining"]["accepted"] == 1 and result["mining"]["errors"] == {}
        assert "Coinbase-only job" in out.stderr and "DeclareMiningJob" not in out.stderr
        got = httpx.get(f"http://127.0.0.1:{port}/v1/miners/{ACCOUNT}/shares", timeout=5).json()
        assert got["miner_shares"] == 1 and got["miner_difficulty"] == str(DIFFICULTY)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


# -- the pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize("height", [0, 1, 16, 17, 127, 128, 255, 256, 840_000, 2**31 - 1])
def test_bip34_height_round_trip(height: int) -> None:
    push = bip34_height(height)
    assert bip34_height_of(push + b"\x08rest") == height


def test_bip34_height_refuses_non_minimal_pushes() -> None:
    assert bip34_height_of(b"") is None
    assert bip34_height_of(b"\x01\x01") is None  # 1 is OP_1 in Core's form
    assert bip34_height_of(b"\x03\x01\x00\x00") is None  # padded
    assert bip34_height_of(b"\x02\x01") is None  # push longer than the script


def test_credited_revenue_caps_at_the_pools_template() -> None:
    node_bt = asyncio.run(_template())
    pub = Published(make_distribution(1), None, SettlementMode(), 0.0, False)
    pool = build_pool_job(node_bt, pub, extranonce_size=8)
    t = pool.revenue
    h = HALVING_INTERVAL_REGTEST
    # Same tip: at most the pool's own T; a smaller claim is credited as claimed.
    assert credited_revenue(t + 5_000, pool.height, pool.prev_hash, pool, h) == t
    assert credited_revenue(t - 5_000, pool.height, pool.prev_hash, pool, h) == t - 5_000
    # Another tip: the subsidy at that height plus the pool's newest fees (none here).
    other = b"\x11" * 32
    assert credited_revenue(t + 5_000, pool.height + 1, other, pool, h) == 5_000_000_000
    # Past a halving, the subsidy there.
    assert credited_revenue(t, 150, other, pool, h) == 2_500_000_000
    # No pool template at all: the subsidy alone.
    assert credited_revenue(t + 5_000, 1, other, None, h) == 5_000_000_000


async def _template() -> Any:
    node = KernelNode()
    try:
        return await node.block_template()
    finally:
        node.close()
