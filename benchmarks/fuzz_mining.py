"""Fuzz job for a live Mining Protocol server: generated and mutated frames over real TCP.

    python -m benchmarks.fuzz_mining --frames 100000 [--seed N] [--concurrency 16]

Starts a JD server and the pool's :class:`~sv2.mining.server.MiningServer` beside it on an
embedded libbitcoinkernel regtest node (one account, ``miner-1``, is known), then opens
connection after connection, ``--concurrency`` at a time. Each is one of:

- **raw**: random bytes before (or instead of) a Noise act 1;
- **session**: a real Noise NX handshake, then 10-200 encrypted frames: SetupConnection (random
  flags, sometimes missing or repeated), RequestExtensions, Open*MiningChannel (the known account
  or random ones, random targets, hash rates and extranonce sizes), SubmitSharesStandard/Extended
  on the connection's real channel and job ids or random ones (every field random),
  SetCustomMiningJob with random tokens, UpdateChannel, CloseChannel, random registered messages
  of every protocol (``benchmarks.fuzz_codec.random_message``) and byte-mutated frames.

Every server frame must decrypt and decode. At the end the server must still serve: its
connection count returns to 0, no connection ended in the server's "internal error" path, no
share was credited that the server did not accept, and a well-behaved JD client (PoolChannel +
JobDeclarationClient) still gets a declared job's share accepted. Exit 1 on any finding.
``tests/mining/test_fuzz_mining.py`` runs the same driver for a few hundred frames.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchmarks.fuzz_codec import fix_length, mutate, random_message
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.kernel import KernelNode
from sv2.authority import authority_public_key
from sv2.connection import ConnectionFailed, HandshakeComplete, Sv2Connection
from sv2.framing import HEADER_SIZE
from sv2.jdc import JobDeclarationClient, JobTemplate
from sv2.jdc.pool_channel import PoolChannel
from sv2.jds import JdsLimits, JobDeclarationServer
from sv2.listener import ListenerLimits
from sv2.messages.base import Message
from sv2.messages.common import SetupConnection
from sv2.messages.extensions import RequestExtensions
from sv2.messages.mining import (
    CloseChannel,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetCustomMiningJob,
    SubmitSharesExtended,
    SubmitSharesStandard,
    UpdateChannel,
)
from sv2.mining.events import AcceptedShare
from sv2.mining.server import MiningServer
from sv2.mining.shared import MiningPolicy
from sv2.mining.targets import REGTEST_POW_LIMIT
from sv2.noise import ServerIdentity

AUTHORITY_SK = bytes.fromhex("5a" * 32)
USER = "miner-1"
MAX = ((1 << 256) - 1).to_bytes(32, "little")


class Findings(list[str]):
    """What the job found (empty: nothing)."""


def _fuzz_message(rng: random.Random, channels: list[int], jobs: list[int]) -> Message:
    r = rng.random()
    cid = rng.choice(channels) if channels and rng.random() < 0.8 else rng.getrandbits(32)
    jid = rng.choice(jobs) if jobs and rng.random() < 0.8 else rng.getrandbits(32)
    if r < 0.3:
        return SubmitSharesExtended(cid, rng.getrandbits(32), jid, rng.getrandbits(32),
                                    rng.choice((rng.getrandbits(32), int(time.time()))),
                                    rng.choice((0x20000000, rng.getrandbits(32))),
                                    rng.randbytes(rng.choice((4, 0, 5, 32))))
    if r < 0.4:
        return SubmitSharesStandard(cid, rng.getrandbits(32), jid, rng.getrandbits(32),
                                    int(time.time()), 0x20000000)
    if r < 0.5:
        user = USER if rng.random() < 0.7 else rng.choice(("", "x" * 200, "mallory"))
        target = rng.choice((MAX, bytes(32), rng.randbytes(32)))
        rate = rng.choice((0.0, 1e12, float("nan"), float("inf"), -1.0))
        if rng.random() < 0.5:
            return OpenExtendedMiningChannel(rng.getrandbits(32), user, rate, target,
                                             rng.choice((0, 4, 5, 32, 0xFFFF)))
        return OpenStandardMiningChannel(rng.getrandbits(32), user, rate, target)
    if r < 0.55:
        return UpdateChannel(cid, rng.choice((0.0, 1e9)), rng.choice((MAX, bytes(32))))
    if r < 0.6:
        return CloseChannel(cid, "fuzz")
    if r < 0.65:
        return SetCustomMiningJob(cid, 1, rng.randbytes(rng.choice((0, 8, 16))), 0x20000000,
                                  rng.randbytes(32), 0, 0x207FFFFF, 2, b"\x01", 0, b"\x00", 0, ())
    if r < 0.7:
        return RequestExtensions(rng.getrandbits(16), (0x0003, rng.getrandbits(16)))
    return random_message(rng)


def _encrypt_raw(conn: Sv2Connection, frame: bytes) -> bytes:
    t = conn._transport
    assert t is not None
    view = memoryview(frame)
    out = [t._send.encrypt(view[:HEADER_SIZE])]
    for start in range(HEADER_SIZE, len(frame), 65_519):
        out.append(t._send.encrypt(view[start : start + 65_519]))
    return b"".join(out)


async def _session(addr: tuple[str, int], rng: random.Random, frames: int, pk: bytes,
                   counts: Counter[str], findings: Findings) -> None:
    reader, writer = await asyncio.open_connection(*addr)
    try:
        if rng.random() < 0.1:  # raw garbage
            writer.write(rng.randbytes(rng.randint(1, 300)))
            await writer.drain()
            counts["raw"] += 1
            return
        conn = Sv2Connection.client(pk)
        writer.write(conn.initiate())
        inbox: list[Any] = []
        while not any(isinstance(i, HandshakeComplete) for i in inbox):
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                return
            inbox += conn.receive_data(data)
        channels: list[int] = []
        jobs: list[int] = []
        if rng.random() < 0.9:
            writer.write(conn.send(SetupConnection(0, 2, 2, rng.choice((0, 1, 2, 4, 8)),
                                                   "", 0, "fuzz", "", "", "")))
        for _ in range(frames):
            msg = _fuzz_message(rng, channels, jobs)
            if rng.random() < 0.1:
                # A mutated plaintext frame, encrypted as is (its header may lie about its
                # length): what a conforming sender cannot produce.
                writer.write(_encrypt_raw(conn, fix_length(mutate(msg.encode_frame(), rng))))
            else:
                writer.write(conn.send(msg))
            counts["frames"] += 1
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(reader.read(65536), 0.01)
                if not data:
                    counts["closed-by-server"] += 1
                    return
                for it in conn.receive_data(data):  # a frame that fails here is a finding
                    opened = OpenExtendedMiningChannelSuccess | OpenStandardMiningChannelSuccess
                    if isinstance(it, opened):
                        channels.append(it.channel_id)
                    elif isinstance(it, NewExtendedMiningJob | NewMiningJob):
                        jobs.append(it.job_id)
                    counts[f"reply:{type(it).__name__}"] += 1
        await writer.drain()
    except (ConnectionError, OSError):
        counts["reset"] += 1
    except ConnectionFailed as exc:
        findings.append(f"server frame did not decrypt/decode: {exc}")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def run(frames: int, seed: int, concurrency: int, *, quiet: bool = False) -> Findings:
    rng = random.Random(seed)
    findings = Findings()
    counts: Counter[str] = Counter()
    credited: list[AcceptedShare] = []

    async def on_shares(batch: Sequence[AcceptedShare]) -> None:
        credited.extend(batch)

    identity = ServerIdentity.signed_by(AUTHORITY_SK, validity_s=86400)
    pk = authority_public_key(AUTHORITY_SK)
    dist = Distribution(1, PoolPayout(b"\x00\x14" + bytes(20), 100),
                        (Payee(b"\x00\x14" + b"\x01" * 20, 1000, 330),))
    with KernelNode() as node:
        jds = JobDeclarationServer(identity=identity, node=node, distribution_source=dist,
                                   limits=JdsLimits(handshake_timeout=5, idle_timeout=30))
        await jds.start()
        mp = MiningServer(identity=identity, node=node, jds=jds,
                          policy=MiningPolicy(difficulty_unit=REGTEST_POW_LIMIT),
                          known_user=lambda u: u == USER, on_shares=on_shares,
                          limits=ListenerLimits(handshake_timeout=5, idle_timeout=10),
                          flush_interval=0.05, tip_interval=0.5)
        await mp.start()
        try:
            done = 0
            t0 = time.perf_counter()
            while done < frames:
                batch = []
                for _ in range(concurrency):
                    n = rng.randint(10, 200)
                    batch.append(_session(mp.address, random.Random(rng.getrandbits(64)), n, pk,
                                          counts, findings))
                    done += n
                await asyncio.gather(*batch)
                if not quiet:
                    print(f"{done:>9} frames, {time.perf_counter() - t0:6.1f}s", flush=True)
            for _ in range(200):
                if mp.connections == 0:
                    break
                await asyncio.sleep(0.05)
            if mp.connections:
                findings.append(f"{mp.connections} connections left open")
            if mp.stats.get("internal-errors"):
                findings.append(f"internal errors: {mp.stats['internal-errors']}")
            await mp.flush()
            accepted = mp.stats.get("shares-accepted", 0)
            if len(credited) != accepted:
                findings.append(f"{len(credited)} shares credited, {accepted} accepted")
            # A well-behaved JD client still mines a declared job through the pool.
            host, port = mp.address
            async with PoolChannel(host, port, pk, user_identity=USER, timeout=10) as pool:
                jh, jp = jds.address
                async with JobDeclarationClient(jh, jp, pk, user_identifier=USER,
                                                extranonce_size=pool.full_extranonce_size) as c:
                    template = JobTemplate.from_block_template(await node.block_template())
                    job = await c.declare_job(template)
                    job_id = await pool.set_custom_job(job)
                    await pool.mine(job, job_id, 1)
                    await pool.wait_answers(1)
                    if pool.channel.accepted != 1:
                        findings.append(f"honest share refused: {pool.channel.errors}")
        finally:
            await mp.stop()
            await jds.stop()
    if not quiet:
        for k, v in sorted(counts.items()):
            print(f"  {k:<40} {v}")
        for k, v in sorted(mp.stats.items()):
            print(f"  server {k:<33} {v}")
    return findings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args(argv)
    findings = asyncio.run(run(a.frames, a.seed, a.concurrency))
    for f in findings:
        print("FINDING:", f)
    print("no findings" if not findings else f"{len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
