"""The Mining Protocol server in cluster roles (issues 12 + 15), as real processes on one
PostgreSQL and one bitcoind regtest node: two ``jds`` frontends each run a Mining Protocol
server beside their JD server, a ``leader`` process keeps the one window.

- A JD client mines a job it declared to frontend A's JD server on A's Mining Protocol server
  (``SetCustomMiningJob``, a CPU-found share); a token of B's JD server is refused on A
  (``invalid-mining-job-token``). On regtest the share is also a block: submitted by A, queued
  for the leader, recorded once although A's JD connection pushes the same solution again.
- After that settlement, B's Mining Protocol server refuses a job declared to B on the settled
  distribution (``stale-payout-distribution``, PR #203 §10).
- A miner that does not declare mines B's pool job: the job follows the new tip and the
  distribution the leader published after the block, so B's block pays that distribution.
- Both shares reach the leader's window once: ``GET /v1/window`` on A and on B agree.
"""

from __future__ import annotations

import asyncio
import re
import struct
from typing import Any

import pytest

from sv2.jdc import JobDeclarationClient, JobTemplate
from sv2.jdc.pool_channel import MiningRejected, PoolChannel
from sv2.messages.common import SetupConnection, SetupConnectionSuccess
from sv2.messages.job_declaration import PushSolution
from sv2.messages.mining import (
    MiningSetNewPrevHash,
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    SubmitSharesExtended,
    SubmitSharesSuccess,
)
from tests.cluster.conftest import Cluster, Member, wait_until
from tests.jds.helpers import AUTHORITY_PK, JdClient
from tests.mining.helpers import sha256d

pytestmark = [pytest.mark.postgres, pytest.mark.bitcoind]

MAX = ((1 << 256) - 1).to_bytes(32, "little")
DIFFICULTY = 3
REVENUE = 5_000_000_000  # regtest subsidy at heights 102 and 103, no fees
SETTLED = re.compile(r"pushing distribution (\d+) \(after a settlement\)")


def _window(c: Cluster, m: Member) -> dict[str, Any] | None:
    r = c.get(m, "/v1/window")
    return r.json() if r.status_code == 200 else None


def _settled_push(m: Member) -> int | None:
    found = SETTLED.findall(m.text())
    return int(found[-1]) if found else None


async def _latest_pool_job(miner: JdClient, tip: bytes) -> tuple[NewExtendedMiningJob,
                                                                  MiningSetNewPrevHash]:
    """The pool job the channel mines now: read until a SetNewPrevHash on ``tip`` came and
    nothing more arrives for a second (a new distribution may follow the new tip)."""
    jobs: dict[int, NewExtendedMiningJob] = {}
    prev: MiningSetNewPrevHash | None = None
    while True:
        try:
            msg = await miner.recv(timeout=1.5)
        except TimeoutError:
            if prev is not None and prev.prev_hash == tip:
                return jobs[prev.job_id], prev
            continue
        if isinstance(msg, NewExtendedMiningJob):
            jobs[msg.job_id] = msg
        elif isinstance(msg, MiningSetNewPrevHash):
            prev = msg


def _grind(job: NewExtendedMiningJob, prev: MiningSetNewPrevHash, prefix: bytes, en: bytes,
           target: int) -> int:
    root = sha256d(job.coinbase_tx_prefix + prefix + en + job.coinbase_tx_suffix)
    for sib in job.merkle_path:
        root = sha256d(root + sib)
    head = struct.pack("<I32s32sIII", job.version, prev.prev_hash, root, prev.min_ntime,
                       prev.nbits, 0)[:76]
    for nonce in range(1 << 20):
        if int.from_bytes(sha256d(head + struct.pack("<I", nonce)), "little") <= target:
            return nonce
    raise AssertionError("no share found")


def test_mining_protocol_on_two_jds_frontends(cluster: Cluster) -> None:
    c = cluster
    assert c.regtest is not None
    c.extra["PAYOUTS_ACCOUNTING__SCHEME"] = "pplns"  # the window keeps every share
    leader = c.start("leader")
    mining = {"PAYOUTS_MINING__INITIAL_DIFFICULTY": str(DIFFICULTY),
              "PAYOUTS_MINING__SHARE_FLUSH_INTERVAL_SEC": "0.05"}
    a = c.start("jds", jds=True, mining=True, **mining)
    b = c.start("jds", jds=True, mining=True, **mining)
    for m in (a, b):  # the JD server (and so the Mining Protocol server) waits for a first
        wait_until(lambda m=m: f"Mining Protocol server listening on 127.0.0.1:{m.mp_port}"
                   in m.text(), 60, "the Mining Protocol server listens")

    async def miners() -> tuple[bytes, bytes, int | None, int | None]:
        node = c.regtest.node()  # type: ignore[union-attr]
        try:
            template = JobTemplate.from_block_template(await node.block_template())
        finally:
            await node.aclose()
        # A miner that does not declare: an extended channel on B, mining B's pool job.
        pm = await JdClient.connect(("127.0.0.1", b.mp_port or 0))
        pm.send(SetupConnection(0, 2, 2, 0, "", 0, "t", "", "", ""))
        await pm.expect(SetupConnectionSuccess)
        pm.send(OpenExtendedMiningChannel(1, "m1", 0.0, MAX, 4))
        ch = await pm.expect(OpenExtendedMiningChannelSuccess)
        async with PoolChannel("127.0.0.1", a.mp_port or 0, AUTHORITY_PK, user_identity="m0",
                               timeout=10) as pa, \
                PoolChannel("127.0.0.1", b.mp_port or 0, AUTHORITY_PK, user_identity="m0",
                            timeout=10) as pb, \
                JobDeclarationClient("127.0.0.1", a.jds_port or 0, AUTHORITY_PK,
                                     user_identifier="m0",
                                     extranonce_size=pa.full_extranonce_size) as ja, \
                JobDeclarationClient("127.0.0.1", b.jds_port or 0, AUTHORITY_PK,
                                     user_identifier="m0",
                                     extranonce_size=pb.full_extranonce_size) as jb:
            job_b = await jb.declare_job(template)
            # B's JD server issued that token: A's Mining Protocol server refuses it.
            with pytest.raises(MiningRejected) as refused:
                await pa.set_custom_job(job_b)
            assert refused.value.code == "invalid-mining-job-token"
            job_a = await ja.declare_job(template)
            job_id = await pa.set_custom_job(job_a)
            assert await pa.mine(job_a, job_id, shares=1) == 1
            await pa.wait_answers(1)
            assert pa.channel.accepted == 1, pa.channel.errors
            assert pa.channel.accepted_difficulty == DIFFICULTY
            s = pa.submitted[0]
            # The same block through A's JD connection: found twice, queued and recorded once.
            ja._send(PushSolution(s.extranonce, template.prev_hash, s.nonce, s.ntime,
                                  template.bits, s.version))
            await ja.drain()
            # The leader records it and publishes the next distribution; B pushes it as a
            # settlement, and refuses what was declared on the settled one (PR #203 §10).
            await asyncio.to_thread(wait_until, lambda: _settled_push(b) is not None, 20,
                                    "B pushed the settlement distribution")
            settled = _settled_push(b)
            with pytest.raises(MiningRejected) as refused:
                await pb.set_custom_job(job_b)
            assert refused.value.code == "stale-payout-distribution"
        # B's pool job followed the new tip and the leader's newest distribution.
        job, prev = await _latest_pool_job(pm, s.block_hash)
        en = b"\x00\x00\x00\x07"
        nonce = _grind(job, prev, bytes(ch.extranonce_prefix), en,
                       int.from_bytes(ch.target, "little"))
        pm.send(SubmitSharesExtended(ch.channel_id, 1, job.job_id, nonce, prev.min_ntime,
                                     job.version, en))
        while not isinstance(ack := await pm.recv(timeout=10), SubmitSharesSuccess):
            pass
        assert (ack.new_submits_accepted_count, ack.new_shares_sum) == (1, DIFFICULTY)
        pm.writer.close()
        return s.block_hash, prev.prev_hash, job_a.distribution_id, settled

    # settled: the distribution B pushed after A's block (B's own block is followed by another)
    block_a, tip, first, settled = asyncio.run(miners())
    assert tip == block_a
    assert settled is not None and first is not None and settled > first
    # Both blocks recorded once each: A's (on the first distribution), then B's pool job's,
    # which paid the distribution the leader published after A's block.
    wait_until(lambda: len(c.sql("SELECT id FROM blocks")) == 2, 20, "both blocks recorded")
    rows = c.sql("SELECT height, distribution_id, block_hash FROM blocks ORDER BY height")
    assert [(int(h), int(d)) for h, d, _ in rows] == [(102, first), (103, settled)]
    assert bytes(rows[0][2]) == block_a
    # Each queued once; the leader marks a queued block after recording it.
    wait_until(lambda: c.sql("SELECT COUNT(*), COUNT(recorded_at) FROM found_blocks")
               == [(2, 2)], 10, "both queued blocks marked recorded")
    assert "(already queued)" in a.text()  # PushSolution reported A's block a second time
    # Both shares in the leader's window, once; both frontends answer the same window.
    wait_until(lambda: (_window(c, a) or {}).get("share_count") == 2
               and _window(c, a) == _window(c, b), 20, "both frontends show both shares")
    w = _window(c, a)
    assert w is not None
    assert {x["account"]: int(x["weight"]) for x in w["miners"]} == {
        "m0": DIFFICULTY * REVENUE, "m1": DIFFICULTY * REVENUE}
    assert [str(k)[:3] for (k,) in c.sql("SELECT share_key FROM shares")] == ["mp:", "mp:"]
    # Metrics and logs as in the single process.
    ma, mb = c.get(a, "/metrics").text, c.get(b, "/metrics").text
    assert 'payouts_sv2_events_total{event="shares-accepted",role="mining"} 1.0' in ma
    assert ('payouts_sv2_events_total{event="custom-job-error:invalid-mining-job-token",'
            'role="mining"} 1.0') in ma
    assert ('payouts_sv2_events_total{event="custom-job-error:stale-payout-distribution",'
            'role="mining"} 1.0') in mb
    assert "found by a share" in a.text() and "found by a share" in b.text()
    assert "Mining Protocol server" not in leader.text()
