"""The Mining Protocol endpoint (issue 12): shares validated and credited, and open channels.

    python -m benchmarks.bench_mining

Cases, each the median of 3 runs:

* ``validated+credited``: 200,000 ``SubmitSharesExtended`` frames (plaintext: the Noise layer
  is ``bench_noise``'s) from 100 miners, each on its own connection and extended channel,
  on the pool's job for a mainnet-like template (12-hash merkle path, a coinbase paying a
  200-payee distribution, nBits far above every share, so no share is a block). Each frame is
  decoded, checked by the connection's :class:`~sv2.mining.session.MiningSession` (header
  rebuilt from the job, the channel's extranonce prefix and the miner's fields, hashed,
  compared with the channel target, duplicates refused), and every accepted share is credited
  through :meth:`~payouts.service.PoolService.ingest_accounts` in batches of 10,000 (SQLite,
  durable on return), as ``payouts serve`` does before SubmitShares.Success. Target: >= 50,000
  shares/s.
* ``baseline``: the same validation with a durable write per share (a one-share batch each),
  2,000 shares: the same-run reference.
* ``10,000 channels``: 100 connections x 100 extended channels, each holding the pool job;
  RSS growth of the process (``/proc/self/statm``). Target: <= 500 MiB.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from payouts.accounting.shares import AccountShareBatch
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.interface import BlockTemplate
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.modes import SettlementMode
from sv2.distribution_book import Published
from sv2.messages import decode_frame
from sv2.messages.common import SetupConnection
from sv2.messages.mining import (
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    SubmitSharesExtended,
)
from sv2.mining.events import AcceptedShare
from sv2.mining.pool_job import build_pool_job
from sv2.mining.session import MiningSession
from sv2.mining.shared import MiningPolicy, MiningShared

MINERS = 100
SHARES = 200_000
BATCH = 10_000
NAIVE = 2_000
CHANNELS_PER_CONNECTION = 100
RUNS = 3
NOW = 1_760_000_000
MAX = ((1 << 256) - 1).to_bytes(32, "little")


def _published() -> Published:
    payees = tuple(Payee(b"\x00\x14" + i.to_bytes(20, "big"), 1_000 + i, 330) for i in range(200))
    d = Distribution(1, PoolPayout(b"\x00\x14" + bytes(20), 500), payees)
    return Published(d, None, SettlementMode(), 0.0, False)


def _shared() -> MiningShared:
    bt = BlockTemplate(0x20000000, os.urandom(32), 900_000, 0x17034219, NOW, 312_500_000, ())
    job = build_pool_job(bt, _published(), extranonce_size=8)
    # Unit 2^256-1: difficulty 1 accepts any hash, so every generated share is valid work.
    # No vardiff step during the run: the difficulty (and so the target) stays 1.
    pol = MiningPolicy(difficulty_unit=(1 << 256) - 1, retarget_interval=1e9)
    sh = MiningShared(pol, known_user=lambda _: True,
                      wall_clock=lambda: NOW)
    sh.pool_job, sh.pool_job_time = job, NOW
    return sh


def _connect(sh: MiningShared, cid: int, channels: int = 1) -> tuple[MiningSession, list[int]]:
    s = MiningSession(cid, sh)
    s.receive(SetupConnection(0, 2, 2, 0, "", 0, "bench", "", "", ""))
    jobs = []
    for i in range(channels):
        out = s.receive(OpenExtendedMiningChannel(i, f"miner{cid}", 0.0, MAX, 4))
        assert isinstance(out[0], OpenExtendedMiningChannelSuccess)
        job = out[1]
        assert isinstance(job, NewExtendedMiningJob)
        jobs.append(job.job_id)
    return s, jobs


def _frames(sessions: list[tuple[MiningSession, list[int]]],
            n: int) -> list[tuple[MiningSession, bytes]]:
    """``n`` distinct shares, round-robin over the connections (nonce and extranonce from the
    per-connection sequence number, so no two repeat)."""
    frames = []
    for i in range(n):
        s, jobs = sessions[i % len(sessions)]
        seq = i // len(sessions)
        msg = SubmitSharesExtended(1, seq, jobs[0], seq & 0xFFFFFFFF, NOW, 0x20000000,
                                   (seq >> 32).to_bytes(4, "big"))
        frames.append((s, msg.encode_frame()))
    return frames


def _service(tmp: Path) -> PoolService:
    svc = PoolService(Settings(data_dir=tmp, network="regtest"))
    for i in range(MINERS):
        svc.register_miner(f"miner{i + 1}", b"\x00\x14" + i.to_bytes(20, "big"))
    return svc


def _credit(svc: PoolService, shares: list[AcceptedShare]) -> int:
    """Durable before it returns; the number of new shares stored."""
    return svc.ingest_accounts(AccountShareBatch(
        key=[a.key for a in shares], account=[a.account for a in shares],
        worker=[a.worker for a in shares], difficulty=[a.difficulty for a in shares],
        job_id=[str(a.job_id) for a in shares], revenue=[a.revenue for a in shares],
        time_ms=[a.time_ms for a in shares])).accepted


def _run(n: int, batch: int) -> tuple[float, float]:
    """Shares per second of wall time and of process CPU time (what other work on a busy
    machine does not inflate): decode, validate, credit in batches of ``batch`` (durable)."""
    sh = _shared()
    frames = _frames([_connect(sh, c + 1) for c in range(MINERS)], n)
    with tempfile.TemporaryDirectory() as tmp:
        svc = _service(Path(tmp))
        pending: list[AcceptedShare] = []
        stored = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for session, raw in frames:
            _, msg = decode_frame(raw)
            for o in session.receive(msg):
                if isinstance(o, AcceptedShare):
                    pending.append(o)
            if len(pending) >= batch:
                stored += _credit(svc, pending)
                pending = []
        if pending:
            stored += _credit(svc, pending)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        svc.engine.dispose()
    assert sh.stats.get("shares-accepted") == n, sh.stats
    assert stored == n, (stored, n)
    return n / elapsed, n / cpu


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _channels() -> float:
    """MiB the process grew by holding 10,000 open channels with their jobs."""
    sh = _shared()
    gc.collect()
    before = _rss()
    held = [_connect(sh, c + 1, CHANNELS_PER_CONNECTION) for c in range(MINERS)]
    gc.collect()
    grown = (_rss() - before) / 2**20
    assert sum(len(s.channels) for s, _ in held) == MINERS * CHANNELS_PER_CONNECTION
    assert len(sh.allocator) == MINERS * CHANNELS_PER_CONNECTION
    return grown


def main() -> int:
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    # First, while the heap is small: later runs leave freed memory that new channels reuse.
    mib = _channels()
    runs = [_run(SHARES, BATCH) for _ in range(RUNS)]
    fast, fast_cpu = (statistics.median(r[i] for r in runs) for i in (0, 1))
    naive_runs = [_run(NAIVE, 1) for _ in range(RUNS)]
    naive, naive_cpu = (statistics.median(r[i] for r in naive_runs) for i in (0, 1))
    print(f"validated+credited (batches of {BATCH:,}, SQLite): {fast:,.0f} shares/s wall, "
          f"{fast_cpu:,.0f} per CPU-second (target >= 50,000)")
    print(f"baseline (a durable write per share): {naive:,.0f} shares/s wall, "
          f"{naive_cpu:,.0f} per CPU-second -> {fast / naive:.1f}x")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"10,000 open channels: +{mib:.1f} MiB RSS (target <= 500 MiB)")
    ok = fast >= 50_000 and mib <= 500
    if not ok:
        print("FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
