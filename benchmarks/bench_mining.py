"""The Mining Protocol endpoint (issue 12): shares validated and credited, and open channels.

    python -m benchmarks.bench_mining

Cases, each the median of 3 runs, timed in wall and in process CPU seconds (the machine is
shared: CPU time is what other work does not inflate), with the load average printed:

* ``validated+credited``: 200,000 ``SubmitSharesExtended`` frames (plaintext: the Noise layer
  is ``bench_noise``'s) from 100 miners, each on its own connection and extended channel,
  on the pool's job for a mainnet-like template (3,000 transactions, so a 12-hash merkle
  path; a coinbase paying a 200-payee distribution; nBits far above every share, so no share
  is a block). They go through the server's own share path, sockets and Noise aside: each
  connection's frames, 16 a read, decoded as a connection decodes them
  (:func:`sv2.connection.decode_received`) and handed to
  :meth:`~sv2.mining.server.MiningServer._handle_items`: the connection's
  :class:`~sv2.mining.session.MiningSession` checks each share (channel, job, staleness,
  extranonce size, BIP-320/323 version bits, ntime, the header rebuilt from the job, the
  channel's extranonce prefix and the miner's fields, double-SHA256'd, compared with the
  channel target, duplicates refused); the server queues it, and every 10,000 shares hands
  the queue to :func:`payouts.served.credit_mining_shares` in a thread, as ``payouts serve``'s
  ``record_shares`` does (SQLite, durable on return: the store and the accountant), then
  sends each channel its SubmitShares.Success. One task per connection: other miners'
  shares are checked while a batch is written. Every share must be accepted, stored, in the
  window and acknowledged. Two extranonce patterns:

  - ``kept``: each miner keeps its extranonce and rolls nonces (a standard channel, or an
    extended one whose miner rolls nonce, version and ntime before its extranonce): the job's
    merkle root for that extranonce is folded once (``sv2.mining.jobs.ROOT_CACHE``). Target:
    >= 50,000 shares/s.
  - ``fresh``: every share on a new extranonce, the worst case: every share hashes the whole
    coinbase suffix (6 kB) and folds the 12-hash path.
* ``baseline``: the ``kept`` frames through the same session, each accepted share written
  durably (``credit_mining_shares`` of one share) before the next frame: 1,000 shares, the
  same-run reference.
* ``10,000 channels``: 100 connections x 100 extended channels, each holding the pool job;
  RSS growth of the process (``/proc/self/statm``). Target: <= 500 MiB.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text

from benchmarks.summary import target
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.interface import BlockTemplate, TemplateTx
from payouts.served import credit_mining_shares
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.modes import SettlementMode
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.connection import decode_received
from sv2.distribution_book import Published
from sv2.messages.base import Message
from sv2.messages.common import SetupConnection
from sv2.messages.mining import (
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    SubmitSharesExtended,
    SubmitSharesSuccess,
)
from sv2.mining.events import AcceptedShare
from sv2.mining.pool_job import build_pool_job
from sv2.mining.server import MiningServer, _Miner
from sv2.mining.session import MiningSession
from sv2.mining.shared import MiningPolicy, MiningShared

MINERS = 100
SHARES = 200_000
BATCH = 10_000
NAIVE = 1_000
TXS = 3_000  # with the coinbase 3,001 leaves: a 12-hash merkle path
CHANNELS_PER_CONNECTION = 100
RUNS = 3
NOW = 1_760_000_000
MAX = ((1 << 256) - 1).to_bytes(32, "little")
TARGET_RATE = 50_000
TARGET_MIB = 500
READ = 16  # frames a connection's read brings


def _published() -> Published:
    payees = tuple(Payee(b"\x00\x14" + i.to_bytes(20, "big"), 1_000 + i, 330) for i in range(200))
    d = Distribution(1, PoolPayout(b"\x00\x14" + bytes(20), 500), payees)
    return Published(d, None, SettlementMode(), 0.0, False)


def _txs() -> tuple[TemplateTx, ...]:
    """``TXS`` segwit-shaped transactions (one input, one P2WPKH output)."""
    out = []
    for i in range(TXS):
        prev = OutPoint(hashlib.sha256(i.to_bytes(4, "little")).digest(), 0)
        txin = TxIn(prev, b"", 0xFFFFFFFD, (bytes(72), bytes(33)))
        tx = Tx(2, (txin,), (TxOut(10_000, b"\x00\x14" + i.to_bytes(20, "big")),), 0)
        out.append(TemplateTx(tx, 1_000, 4))
    return tuple(out)


_TEMPLATE_TXS: tuple[TemplateTx, ...] = ()


def _pool_job() -> object:
    global _TEMPLATE_TXS
    if not _TEMPLATE_TXS:
        _TEMPLATE_TXS = _txs()
    bt = BlockTemplate(0x20000000, os.urandom(32), 900_000, 0x17034219, NOW,
                       312_500_000 + 1_000 * TXS, _TEMPLATE_TXS)
    return build_pool_job(bt, _published(), extranonce_size=8)


# Unit 2^256-1: difficulty 1 accepts any hash, so every generated share is valid work.
# No vardiff step during the run: the difficulty (and so the target) stays 1.
POLICY = MiningPolicy(difficulty_unit=(1 << 256) - 1, retarget_interval=1e9)


def _shared() -> MiningShared:
    sh = MiningShared(POLICY, known_user=lambda _: True, wall_clock=lambda: NOW)
    sh.pool_job, sh.pool_job_time = _pool_job(), NOW  # type: ignore[assignment]
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
        assert len(job.merkle_path) == 12, len(job.merkle_path)
        jobs.append(job.job_id)
    return s, jobs


def _frames(jobs: list[int], n: int, fresh: bool) -> list[bytes]:
    """``n`` distinct shares of one connection: the nonce is the sequence number; the
    extranonce is the connection's own (``kept``) or the sequence number too (``fresh``)."""
    return [
        SubmitSharesExtended(1, seq, jobs[0], seq, NOW, 0x20000000,
                             seq.to_bytes(4, "big") if fresh else b"\x00\x00\x00\x07"
                             ).encode_frame()
        for seq in range(n)
    ]


class _Wire:
    """Stands in for a connection's Noise transport and socket: what the server sends is
    encoded (plaintext) and kept, so the run can check every share was acknowledged."""

    def __init__(self) -> None:
        self.acked = 0
        self.transport = self

    def send(self, msg: Message) -> bytes:
        if type(msg) is SubmitSharesSuccess:
            self.acked += msg.new_submits_accepted_count
        return msg.encode_frame()

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _service(tmp: Path) -> PoolService:
    svc = PoolService(Settings(data_dir=tmp, network="regtest"))
    for i in range(MINERS):
        svc.register_miner(f"miner{i + 1}", b"\x00\x14" + i.to_bytes(20, "big"))
    return svc


async def _serve(svc: PoolService, n: int, batch: int, fresh: bool) -> tuple[float, float]:
    """The server's share path without sockets: each miner's frames, a read of ``READ``
    frames at a time, go through :meth:`MiningServer._handle_items` (session, queue, a flush
    every ``batch`` shares: :func:`credit_mining_shares` in a thread, as ``payouts serve``'s
    ``record_shares`` runs it, then one SubmitShares.Success per channel), one task per
    connection, so other miners' shares are checked while a batch is being written."""

    async def on_shares(shares: Sequence[AcceptedShare]) -> None:
        await asyncio.to_thread(credit_mining_shares, svc, shares)

    server = MiningServer(identity=lambda: None,  # type: ignore[arg-type,return-value]
                          node=None,  # type: ignore[arg-type]
                          policy=POLICY, known_user=lambda _: True, on_shares=on_shares,
                          batch_size=batch)
    sh = server.shared
    sh.wall_clock = lambda: NOW
    sh.pool_job, sh.pool_job_time = _pool_job(), NOW  # type: ignore[assignment]
    wires, feeds = [], []
    for cid in range(1, MINERS + 1):
        session, jobs = _connect(sh, cid)
        wire = _Wire()
        peer = _Miner(cid, wire, wire, "bench", session=session)  # type: ignore[arg-type]
        server._peers[cid] = peer
        wires.append(wire)
        frames = _frames(jobs, n // MINERS, fresh)
        feeds.append((peer, [frames[i:i + READ] for i in range(0, len(frames), READ)]))

    async def miner(peer: _Miner, reads: list[list[bytes]]) -> None:
        for raw in reads:
            await server._handle_items(peer, [decode_received(f) for f in raw])
            await asyncio.sleep(0)  # the next connection's read

    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(miner(p, reads) for p, reads in feeds))
    await server.flush()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert sh.stats.get("shares-accepted") == n, sh.stats
    assert server.stats.get("shares-recorded") == n, server.stats
    assert sum(w.acked for w in wires) == n
    return n / elapsed, n / cpu


def _one_by_one(svc: PoolService, n: int) -> tuple[float, float]:
    """The baseline: the same frames and the same session checks, each accepted share
    written durably (:func:`credit_mining_shares` of that one share) before the next frame
    is read."""
    sh = _shared()
    sessions = [_connect(sh, cid) for cid in range(1, MINERS + 1)]
    frames = [(s, f) for s, jobs in sessions for f in _frames(jobs, n // MINERS, False)]
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    for session, raw in frames:
        for o in session.receive(decode_received(raw)):
            if type(o) is AcceptedShare:
                assert credit_mining_shares(svc, [o]) == 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert sh.stats.get("shares-accepted") == n, sh.stats
    return n / elapsed, n / cpu


def _run(n: int, batch: int, *, fresh: bool = False) -> tuple[float, float]:
    """Shares per second of wall time and of process CPU time (every thread's); ``batch``
    1: the one-by-one baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        svc = _service(Path(tmp))
        rates = _one_by_one(svc, n) if batch == 1 else asyncio.run(_serve(svc, n, batch, fresh))
        in_window = len(svc.accountant.log)  # handed to the accountant, not only stored
        with svc.engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM shares")).scalar_one()
        svc.engine.dispose()
    assert in_window == stored == n, (in_window, stored, n)
    return rates


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


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> int:
    load0 = os.getloadavg()[0]
    print(f"load average {load0:.1f} (1 min) at the start", flush=True)
    # First, while the heap is small: later runs leave freed memory that new channels reuse.
    mib = _channels()
    kept, kept_cpu = _median([_run(SHARES, BATCH) for _ in range(RUNS)])
    load1 = os.getloadavg()[0]
    fresh, fresh_cpu = _median([_run(SHARES, BATCH, fresh=True) for _ in range(RUNS)])
    naive, naive_cpu = _median([_run(NAIVE, 1) for _ in range(RUNS)])
    load2 = os.getloadavg()[0]
    print(f"validated+credited, extranonce kept (batches of {BATCH:,}, SQLite): "
          f"{kept:,.0f} shares/s wall, {kept_cpu:,.0f} per CPU-second "
          f"(target >= {TARGET_RATE:,})")
    print(f"validated+credited, a fresh extranonce per share: {fresh:,.0f} shares/s wall, "
          f"{fresh_cpu:,.0f} per CPU-second")
    print(f"baseline (the same validation, a durable write per share, {NAIVE:,} shares): "
          f"{naive:,.0f} shares/s wall, {naive_cpu:,.0f} per CPU-second -> "
          f"kept {kept / naive:.1f}x wall, {kept_cpu / naive_cpu:.1f}x CPU")
    print(f"load average {load1:.1f} after the kept runs, {load2:.1f} at the end")
    print(f"10,000 open channels: +{mib:.1f} MiB RSS (target <= {TARGET_MIB} MiB)")
    base = f"a durable write per share: {naive:,.0f}/s wall, {naive_cpu:,.0f}/CPU-s"
    target("MP SubmitSharesExtended validated+credited, wall", kept, TARGET_RATE, "shares/s",
           at_least=True, baseline=base, load=load1)
    target("MP SubmitSharesExtended validated+credited, per CPU-second", kept_cpu, TARGET_RATE,
           "shares/s", at_least=True, baseline=base, load=load1)
    target("MP shares, a fresh extranonce each (worst case), per CPU-second", fresh_cpu,
           TARGET_RATE, "shares/s", at_least=True, baseline=base, load=load2)
    target("MP 10,000 open channels, RSS growth", mib, TARGET_MIB, "MiB", at_least=False,
           load=load0)
    ok = kept >= TARGET_RATE and mib <= TARGET_MIB
    if not ok:
        print("FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
