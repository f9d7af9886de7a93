"""Fuzz job for a live JD server: generated and mutated frames over real TCP.

    python -m benchmarks.fuzz_server --frames 100000 [--seed N] [--concurrency 48]

Starts ``benchmarks.jds_server_process`` (a :class:`~sv2.jds.JobDeclarationServer` on a
libbitcoinkernel regtest node with known mempool transactions, in its own process) and opens
connection after connection to it, ``--concurrency`` at a time. Each connection is one of:

- **raw** (before the handshake): random bytes of random lengths in one to three writes, then
  half-closed, or left open for the server's handshake / idle timeout;
- **act1 + garbage**: a 64-byte act 1 (any 64 bytes decode as EllSwift), the server's act 2,
  then random ciphertext (must fail authentication);
- **session**: a real Noise NX handshake, then 10-200 encrypted frames: SetupConnection (now and
  then wrong, repeated or missing), RequestExtensions, AllocateMiningJobToken, DeclareMiningJob
  built valid from the server's mempool and then mutated (coinbase bytes flipped, cut or
  extended; tokens foreign, spent or random; wtxids unknown, repeated, dropped, shuffled;
  distribution_id TLV wrong or missing; ...), ProvideMissingTransactions.Success with real,
  mutated, coinbase and random transactions, RequestPayoutOutputs, PushSolution, frames of
  unregistered extension types (channel bit set or not), random registered messages, byte-mutated
  frames (``benchmarks.fuzz_codec.mutate``), and to end some sessions a forged header announcing
  a wrong or oversized length, a truncated frame or raw garbage.

Frames of a session are written pipelined while a reader decrypts every answer (a server frame
that does not authenticate or decode is a finding). A session ends with a probe
(AllocateMiningJobToken): the connection must be **answered or closed** within
``idle_timeout + 5`` s, otherwise it is a hang. At the end the server process must still run,
its connection count must return to 0 (no leak), its fd count to the baseline, its RSS must not
grow by more than ``--rss-growth`` MiB after warm-up, no connection may have ended in the
server's "internal error" path, and a well-behaved client must still complete a full
declaration (token, DeclareMiningJob.Success, PushSolution -> block accepted by the kernel).
Progress goes to stdout every ``--progress`` frames; exit 1 on any finding.

``tests/jds/test_fuzz_server.py`` runs the same driver for a few thousand frames in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fuzz_codec import fix_length, mutate, random_message
from benchmarks.jds_server_process import ServerProcess, distribution, raise_fd_limit
from payouts.distribution.model import Distribution
from payouts.settlement.coinbase import build_coinbase_settlement
from payouts.tx.block import BlockHeader, check_pow
from payouts.tx.coinbase import (
    HALVING_INTERVAL_REGTEST,
    block_subsidy,
    witness_commitment,
    witness_commitment_output,
)
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import Tx
from sv2.connection import ConnectionFailed, HandshakeComplete, Sv2Connection
from sv2.framing import HEADER_SIZE
from sv2.messages import (
    REGISTRY,
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    DistributionIdTlv,
    Message,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    PushSolution,
    RequestExtensions,
    RequestPayoutOutputs,
    SetupConnection,
)
from sv2.noise import ACT1_SIZE, ACT2_SIZE

BLOCK_VERSION = 0x20000000
UNREGISTERED_EXT = [e for e in range(0x4000, 0x4100) if all(k[0] != e for k in REGISTRY)]


@dataclass(frozen=True)
class Tip:
    height: int
    block_hash: bytes
    bits: int
    time: int


@dataclass
class Target:
    """What the fuzzer knows about the server: where it is, its authority key, the payout
    distribution it serves and the transactions in its node's mempool (with fees)."""

    host: str
    port: int
    authority_key: bytes
    distribution: Distribution
    mempool: list[tuple[Tx, int]]
    tip: Tip
    idle_timeout: float = 5.0
    max_frame_size: int = 1 << 20


@dataclass
class Tally:
    frames: int = 0
    connections: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    foreign_tokens: list[bytes] = field(default_factory=list)

    def finding(self, what: str) -> None:
        if len(self.findings) < 50:
            self.findings.append(what)


# -- building blocks of valid traffic --------------------------------------------------------


@dataclass
class Declaration:
    prefix: bytes
    suffix: bytes
    txs: tuple[Tx, ...]

    def message(self, request_id: int, token: bytes, dist_id: int | None) -> DeclareMiningJob:
        tlvs = (DistributionIdTlv(dist_id),) if dist_id is not None else ()
        wtxids = tuple(t.wtxid for t in self.txs)
        return DeclareMiningJob(
            request_id, token, BLOCK_VERSION, self.prefix, self.suffix, wtxids, b"", tlvs=tlvs
        )


def valid_declaration(target: Target, txs: list[tuple[Tx, int]], tag: bytes) -> Declaration:
    """The coinbase a correct JD client builds on ``target.tip`` for ``txs`` (0x0003 rules)."""
    height = target.tip.height + 1
    revenue = block_subsidy(height, HALVING_INTERVAL_REGTEST) + sum(f for _, f in txs)
    commitment = witness_commitment([t.wtxid for t, _ in txs])
    st = build_coinbase_settlement(
        target.distribution,
        revenue,
        height=height,
        template_outputs=(witness_commitment_output(commitment),),
        tag=tag,
    )
    return Declaration(st.parts.prefix, st.parts.suffix, tuple(t for t, _ in txs))


def solve(decl: Declaration, tip: Tip, extranonce: bytes) -> PushSolution:
    """Grind a nonce for ``decl`` (regtest target: about every other hash)."""
    cb = Tx.parse(decl.prefix + extranonce + decl.suffix)
    root = merkle_root([cb.txid, *(t.txid for t in decl.txs)])
    for nonce in range(1 << 16):
        h = BlockHeader(BLOCK_VERSION, tip.block_hash, root, tip.time + 1, tip.bits, nonce)
        if check_pow(h.hash, tip.bits):
            return PushSolution(
                extranonce, tip.block_hash, nonce, tip.time + 1, tip.bits, BLOCK_VERSION
            )
    raise AssertionError("no nonce found on a regtest target")


def setup_message() -> SetupConnection:
    return SetupConnection(1, 2, 2, 1, "127.0.0.1", 0, "fuzz", "", "", "")


# -- one session ------------------------------------------------------------------------------


@dataclass
class Session:
    """Client side of one fuzzed connection: a reader task decrypts and records answers."""

    conn: Sv2Connection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    tally: Tally
    tokens: list[bytes] = field(default_factory=list)
    provide_requests: list[ProvideMissingTransactions] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    probe_id: int = -1
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    received: int = 0

    async def read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65_536)
                if not data:
                    return
                try:
                    items = self.conn.receive_data(data)
                except ConnectionFailed as exc:
                    self.tally.finding(f"server sent undecryptable bytes: {exc.message}")
                    return
                for it in items:
                    self._on(it)
        except (ConnectionError, OSError):
            return
        finally:
            self.closed.set()

    def _on(self, it: Any) -> None:
        self.received += 1
        if not isinstance(it, Message):
            self.tally.finding(f"server sent a frame the codec does not decode: {it!r}"[:300])
            return
        if isinstance(it, AllocateMiningJobTokenSuccess):
            self.tokens.append(it.mining_job_token)
            if it.request_id == self.probe_id:
                self.answered.set()
        elif isinstance(it, ProvideMissingTransactions):
            self.provide_requests.append(it)
        elif isinstance(it, DeclareMiningJobSuccess):
            self.tally.outcomes["declare-accepted"] += 1

    def send(self, msg: Message) -> None:
        self.writer.write(self.conn.send(msg))

    def send_raw_frame(self, frame: bytes) -> None:
        """Encrypt a plaintext frame whose header may lie about its length: what a conforming
        sender cannot produce, so the transport's cipher is driven directly."""
        t = self.conn._transport
        assert t is not None
        view = memoryview(frame)
        out = [t._send.encrypt(view[:HEADER_SIZE])]
        for start in range(HEADER_SIZE, len(frame), 65_519):
            out.append(t._send.encrypt(view[start : start + 65_519]))
        self.writer.write(b"".join(out))


def _flip(data: bytes, rng: random.Random) -> bytes:
    return mutate(data, rng) if data else rng.randbytes(rng.randint(1, 8))


def fuzz_declare(s: Session, target: Target, rng: random.Random, rid: int) -> Message:
    pool = target.mempool
    k = rng.choice((0, 0, 1, 2, len(pool)))
    chosen = sorted(rng.sample(range(len(pool)), min(k, len(pool))))
    txs = [pool[i] for i in chosen]
    decl = valid_declaration(target, txs, b"/fuzz/")
    r = rng.random()
    if s.tokens and r < 0.7:
        token = s.tokens.pop(rng.randrange(len(s.tokens)))
    elif s.tally.foreign_tokens and r < 0.8:
        token = rng.choice(s.tally.foreign_tokens)
    else:
        token = rng.randbytes(rng.choice((0, 8, 16, 16, 32)))
    dist_id: int | None = target.distribution.distribution_id
    msg = decl.message(rid, token, dist_id)
    fields = dict(msg.__dict__)
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        what = rng.randrange(9)
        if what == 0:
            fields["coinbase_tx_prefix"] = _flip(fields["coinbase_tx_prefix"], rng)
        elif what == 1:
            fields["coinbase_tx_suffix"] = _flip(fields["coinbase_tx_suffix"], rng)
        elif what == 2:
            fields["wtxid_list"] = (*fields["wtxid_list"], rng.randbytes(32))  # unknown
        elif what == 3 and fields["wtxid_list"]:
            w = list(fields["wtxid_list"])
            w.append(rng.choice(w))  # repeated
            fields["wtxid_list"] = tuple(w)
        elif what == 4 and fields["wtxid_list"]:
            w = list(fields["wtxid_list"])
            rng.shuffle(w)
            fields["wtxid_list"] = tuple(w[: rng.randint(0, len(w))])
        elif what == 5:
            tlv = rng.choice(
                ((), (DistributionIdTlv(rng.getrandbits(64)),), (DistributionIdTlv(0),))
            )
            fields["tlvs"] = tlv
        elif what == 6:
            fields["version"] = rng.getrandbits(32)
        elif what == 7:
            fields["excess_data"] = rng.randbytes(rng.randint(0, 40))
        else:  # many unknown wtxids: the ProvideMissingTransactions path
            fields["wtxid_list"] = tuple(rng.randbytes(32) for _ in range(rng.randint(1, 50)))
    return DeclareMiningJob(**fields)


def fuzz_provide(s: Session, target: Target, rng: random.Random) -> Message:
    if s.provide_requests and rng.random() < 0.8:
        req = s.provide_requests.pop(0)
        rid = req.request_id
    else:
        rid = rng.getrandbits(32)
    txs: list[bytes] = []
    for _ in range(rng.choice((0, 1, 1, 2, 5))):
        r = rng.random()
        raw = rng.choice(target.mempool)[0].serialize() if target.mempool else b""
        if r < 0.4 and raw:
            txs.append(raw)
        elif r < 0.7 and raw:
            txs.append(_flip(raw, rng))
        elif r < 0.8:
            cb = valid_declaration(target, [], b"/cb/")
            txs.append(cb.prefix + bytes(8) + cb.suffix)  # a coinbase
        else:
            txs.append(rng.randbytes(rng.randint(0, 120)))
    return ProvideMissingTransactionsSuccess(rid, tuple(txs))


def fuzz_frame(s: Session, target: Target, rng: random.Random, rid: int) -> Message | bytes:
    """One frame (a message, or plaintext frame bytes) of the session's middle part."""
    r = rng.random()
    if r < 0.20:
        return AllocateMiningJobToken(rng.choice(("", "miner", "x" * 255, "é")), rid)
    if r < 0.50:
        return fuzz_declare(s, target, rng, rid)
    if r < 0.60:
        return fuzz_provide(s, target, rng)
    if r < 0.68:
        token = s.tokens[0] if s.tokens and rng.random() < 0.6 else rng.randbytes(16)
        value = rng.choice((0, 1, 5_000_000_000, 21_000_000 * 10**8 + 1, rng.getrandbits(64)))
        return RequestPayoutOutputs(rid, token, value)
    if r < 0.76:
        tip = target.tip
        return PushSolution(
            rng.randbytes(rng.choice((8, 8, 0, 32))),
            tip.block_hash if rng.random() < 0.7 else rng.randbytes(32),
            rng.getrandbits(32),
            tip.time + rng.randint(-5, 5),
            tip.bits if rng.random() < 0.8 else rng.getrandbits(32),
            BLOCK_VERSION,
        )
    if r < 0.94:  # an unregistered extension: discarded (sv2-spec §3.4), channel bit or not
        ext = rng.choice(UNREGISTERED_EXT) | (0x8000 if rng.random() < 0.3 else 0)
        payload = rng.randbytes(rng.randint(0, 200))
        header = ext.to_bytes(2, "little") + bytes([rng.randrange(256)])
        return header + len(payload).to_bytes(3, "little") + payload
    if r < 0.95:  # a second negotiation: disconnects
        return RequestExtensions(
            rid & 0xFFFF, tuple(rng.sample((0x0003, 0x4002, 0x4003, 0x0002, 0x7777), 2))
        )
    if r < 0.975:
        return random_message(rng)  # anything registered, often not a client message
    frame = random_message(rng).encode_frame()  # byte-mutated, length made consistent or not
    m = mutate(frame, rng)
    return fix_length(m) if rng.random() < 0.8 else m


def _lying(rng: random.Random, target: Target) -> bytes:
    """A plaintext frame whose header announces a wrong or oversized length."""
    msg = AllocateMiningJobToken("x", 1).encode_frame()
    n = rng.choice(
        (len(msg) - HEADER_SIZE + rng.randint(1, 40), 0, target.max_frame_size + 1, 0xFFFFFF)
    )
    return msg[:3] + n.to_bytes(3, "little") + msg[HEADER_SIZE:]


async def _tokens(s: Session, n: int) -> None:
    while len(s.tokens) < n and not s.closed.is_set():
        await asyncio.sleep(0.005)


async def session(target: Target, rng: random.Random, tally: Tally, bound: float) -> None:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), bound
    )
    conn = Sv2Connection.client(target.authority_key)
    s = Session(conn, reader, writer, tally)
    try:
        writer.write(conn.initiate())
        tally.frames += 1
        buf: list[Any] = []
        while not any(isinstance(i, HandshakeComplete) for i in buf):
            data = await asyncio.wait_for(reader.read(65_536), bound)
            if not data:
                tally.finding("server closed during a valid handshake")
                return
            buf.extend(conn.receive_data(data))
        for it in buf:
            if not isinstance(it, HandshakeComplete):
                s._on(it)
        task = asyncio.create_task(s.read_loop())
        rid = rng.getrandbits(24)
        r = rng.random()
        if r < 0.9:
            s.send(setup_message())
        elif r < 0.95:
            s.send(
                SetupConnection(
                    rng.randrange(4), 2, rng.randrange(4), rng.randrange(8), "", 0, "", "", "", ""
                )
            )
        tally.frames += 1 if r < 0.95 else 0
        if rng.random() < 0.8:
            exts = (0x0003, 0x4003, 0x4002) if rng.random() < 0.8 else (0x0003,)
            s.send(RequestExtensions(rid & 0xFFFF, exts))
            tally.frames += 1
        if rng.random() < 0.7:  # hold a few tokens first, so declarations get past them
            for j in range(3):
                s.send(AllocateMiningJobToken("miner", rid + 1 + j))
                tally.frames += 1
            rid += 3
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_tokens(s, 3), 1.0)
        n = rng.randint(10, 200)
        for i in range(n):
            if s.closed.is_set() or writer.transport.is_closing():
                break
            rid += 1
            f = fuzz_frame(s, target, rng, rid)
            if isinstance(f, Message):
                s.send(f)
                if isinstance(f, DeclareMiningJob) and f.mining_job_token:
                    tally.foreign_tokens.append(bytes(f.mining_job_token))
                    del tally.foreign_tokens[:-64]
            else:
                s.send_raw_frame(f)
            tally.frames += 1
            if i % 4 == 3:
                await writer.drain()
                await asyncio.sleep(0.001)
        end = rng.random()
        we_closed = False
        if not s.closed.is_set() and end < 0.15:
            kind = rng.randrange(3)
            if kind == 0:
                s.send_raw_frame(_lying(rng, target))
            elif kind == 1:
                data = conn.send(AllocateMiningJobToken("t", 2))
                writer.write(data[: rng.randint(1, len(data) - 1)])
                writer.close()
                we_closed = True
            else:
                writer.write(rng.randbytes(rng.randint(1, 300)))
            tally.frames += 1
            tally.outcomes[f"ending-{('lying-length', 'truncated', 'garbage')[kind]}"] += 1
        elif not s.closed.is_set():
            s.probe_id = 0xFFFFFFFF
            s.send(AllocateMiningJobToken("probe", s.probe_id))
            tally.frames += 1
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        if we_closed:
            tally.outcomes["closed-by-client"] += 1
        else:
            done = asyncio.create_task(s.answered.wait())
            gone = asyncio.create_task(s.closed.wait())
            _done, pending = await asyncio.wait(
                (done, gone), timeout=bound, return_when=asyncio.FIRST_COMPLETED
            )
            for p in pending:
                p.cancel()
            if s.answered.is_set():
                tally.outcomes["answered"] += 1
            elif s.closed.is_set():
                tally.outcomes["closed-by-server"] += 1
            else:
                tally.finding(f"hang: session neither answered nor closed within {bound:.0f} s")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        writer.close()


async def pre_handshake(target: Target, rng: random.Random, tally: Tally, bound: float) -> None:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), bound
    )
    try:
        if rng.random() < 0.4:  # act 1 (any 64 bytes), read act 2, then garbage ciphertext
            writer.write(rng.randbytes(ACT1_SIZE))
            tally.frames += 1
            got = b""
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                while len(got) < ACT2_SIZE:
                    chunk = await asyncio.wait_for(reader.read(ACT2_SIZE - len(got)), bound)
                    if not chunk:
                        break
                    got += chunk
            if len(got) == ACT2_SIZE:
                tally.outcomes["act2-received"] += 1
            writer.write(rng.randbytes(rng.randint(22, 400)))
            tally.frames += 1
        else:
            for _ in range(rng.randint(1, 3)):
                writer.write(rng.randbytes(rng.choice((0, 1, 10, 63, 64, 65, 100, 300))))
                tally.frames += 1
            if rng.random() < 0.7:
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write_eof()
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                left = bound - (time.monotonic() - t0)
                if left <= 0:
                    tally.finding(f"hang: pre-handshake peer not closed within {bound:.0f} s")
                    break
                try:
                    if not await asyncio.wait_for(reader.read(65_536), left):
                        break
                except TimeoutError:
                    continue
        tally.outcomes["pre-handshake-closed"] += 1
    finally:
        writer.close()


# -- the driver -------------------------------------------------------------------------------

StatsFn = Callable[[], Awaitable[dict[str, Any]]]


async def run_fuzz(
    target: Target,
    frames: int,
    seed: int,
    *,
    concurrency: int = 48,
    progress: int = 10_000,
    stats: StatsFn | None = None,
    out: Callable[[str], None] = print,
) -> Tally:
    """Throw ``frames`` frames at ``target``; findings are collected in the returned tally."""
    tally = Tally()
    bound = target.idle_timeout + 5.0
    master = random.Random(seed)
    next_report = progress
    next_tip = 2_000
    start = time.monotonic()

    async def worker(wseed: int) -> None:
        nonlocal next_report, next_tip
        rng = random.Random(wseed)
        while tally.frames < frames and len(tally.findings) < 50:
            tally.connections += 1
            try:
                if rng.random() < 0.15:
                    await pre_handshake(target, rng, tally, bound)
                else:
                    await session(target, rng, tally, bound)
            except (TimeoutError, ConnectionError, OSError) as exc:
                tally.outcomes[f"client-socket:{type(exc).__name__}"] += 1
            except Exception as exc:  # the fuzzer's own failure must not pass as the server's
                tally.finding(f"fuzz client error: {exc!r}")
            if stats is not None and tally.frames >= next_tip:
                next_tip += 2_000
                refresh(target, await stats())  # fuzzed PushSolutions find blocks: follow
            if tally.frames >= next_report:
                next_report += progress
                rate = tally.frames / max(time.monotonic() - start, 1e-9)
                line = f"{tally.frames:>9} frames  {rate:,.0f}/s  {tally.connections} connections"
                if stats is not None:
                    st = await stats()
                    line += (
                        f"  server: {st['connections']} open, {st['fds']} fds, "
                        f"RSS {st['rss_kib'] / 1024:.1f} MiB"
                    )
                out(line)

    await asyncio.gather(*(worker(master.getrandbits(64)) for _ in range(concurrency)))
    return tally


async def good_client(target: Target) -> tuple[bool, str]:
    """A well-behaved client: handshake, setup, 0x0003/0x4003, token, a declaration of every
    mempool transaction, DeclareMiningJob.Success, then PushSolution of a solved header."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    conn = Sv2Connection.client(target.authority_key)
    inbox: list[Any] = []

    async def recv(kind: type | tuple[type, ...]) -> Any:
        while True:
            while inbox:
                it = inbox.pop(0)
                if isinstance(it, kind):
                    return it
            data = await asyncio.wait_for(reader.read(65_536), 10)
            if not data:
                raise ConnectionError("server closed the good client's connection")
            inbox.extend(conn.receive_data(data))

    try:
        writer.write(conn.initiate())
        await recv(HandshakeComplete)
        writer.write(conn.send(setup_message()))
        writer.write(conn.send(RequestExtensions(1, (0x0003, 0x4003))))
        writer.write(conn.send(AllocateMiningJobToken("good", 2)))
        tok = await recv(AllocateMiningJobTokenSuccess)
        decl = valid_declaration(target, list(target.mempool), b"/good/")
        writer.write(
            conn.send(decl.message(3, tok.mining_job_token, target.distribution.distribution_id))
        )
        ok = await recv(
            (DeclareMiningJobSuccess, DeclareMiningJobError, ProvideMissingTransactions)
        )
        if not isinstance(ok, DeclareMiningJobSuccess):
            return False, f"declaration answered with {ok!r}"[:300]
        writer.write(conn.send(solve(decl, target.tip, bytes(8))))
        await writer.drain()
        return True, "declared and pushed"
    finally:
        writer.close()


# -- the job against a server process --------------------------------------------------------


def tip_of(st: dict[str, Any]) -> Tip:
    t = st["tip"]
    return Tip(t["height"], bytes.fromhex(t["hash"]), t["bits"], t["time"])


def refresh(target: Target, st: dict[str, Any]) -> None:
    """Follow the server's tip and its node's template (``stats`` carries both)."""
    target.tip = tip_of(st)
    target.mempool = [(Tx.parse(bytes.fromhex(raw)), fee) for raw, fee in st["mempool"]]


async def wait_drained(stats: StatsFn, bound: float) -> dict[str, Any]:
    """Server stats once its connection count is 0, or after ``bound`` s (then it is not)."""
    t0 = time.monotonic()
    while True:
        st = await stats()
        if st["connections"] == 0 or time.monotonic() - t0 > bound:
            return st
        await asyncio.sleep(0.2)


async def main_async(args: argparse.Namespace) -> int:

    raise_fd_limit()
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    idle = 5.0
    srv = await ServerProcess.start(
        "--mempool",
        str(args.mempool),
        "--payees",
        str(args.payees),
        "--log-level",
        "ERROR",
        "--handshake-timeout",
        "2",
        "--idle-timeout",
        str(idle),
        # Every fuzz connection comes from 127.0.0.1: with per-address limits the flood of
        # garbage connections would evict the valid sessions mid-handshake (what those limits
        # are for; benchmarks.attack_jds measures it). Here the decoders are under test.
        "--max-pending-per-address",
        "0",
        "--max-connections-per-address",
        "0",
        "--connects-per-address-per-sec",
        "0",
    )
    h = srv.hello
    print(
        f"fuzz_server: {args.frames} frames, seed {seed}, concurrency {args.concurrency}, "
        f"JDS pid {h['pid']} on {h['host']}:{h['port']}",
        flush=True,
    )
    failures: list[str] = []
    try:
        st0 = await srv.stats()
        target = Target(
            h["host"],
            h["port"],
            bytes.fromhex(h["authority_key"]),
            distribution(args.payees),
            [],
            tip_of(st0),
            idle_timeout=idle,
        )
        refresh(target, st0)
        # Warm-up: every code path once, so the RSS baseline includes lazily built state.
        await run_fuzz(
            target,
            min(3_000, args.frames // 10),
            seed ^ 1,
            concurrency=args.concurrency,
            progress=10**9,
            stats=srv.stats,
        )
        warm = await wait_drained(srv.stats, idle + 10)
        refresh(target, warm)
        t0 = time.monotonic()
        tally = await run_fuzz(
            target,
            args.frames,
            seed,
            concurrency=args.concurrency,
            progress=args.progress,
            stats=srv.stats,
            out=lambda s: print(s, flush=True),
        )
        elapsed = time.monotonic() - t0
        end = await wait_drained(srv.stats, idle + 10)
        refresh(target, end)
        ok, why = await good_client(target)
        await asyncio.sleep(0.5)
        after = await wait_drained(srv.stats, idle + 10)
        print(
            f"frames sent {tally.frames:,} in {elapsed:.1f} s ({tally.frames / elapsed:,.0f}/s), "
            f"{tally.connections:,} connections"
        )
        print("client-side outcomes:", dict(sorted(tally.outcomes.items())))
        print("server counters:", json.dumps(after["stats"], sort_keys=True))
        print(
            f"server connections {after['connections']}, fds {st0['fds']} at start / "
            f"{warm['fds']} after warm-up / {after['fds']} at end, RSS "
            f"{st0['rss_kib'] / 1024:.1f} / {warm['rss_kib'] / 1024:.1f} / "
            f"{after['rss_kib'] / 1024:.1f} MiB, tokens {after['tokens']}, tasks {after['tasks']}"
        )
        failures += tally.findings
        if tally.frames < args.frames:
            failures.append(f"only {tally.frames} frames sent")
        if end["connections"] != 0:
            failures.append(f"leak: {end['connections']} connections still open after the fuzz")
        if end["fds"] > warm["fds"] + 2:
            failures.append(f"leak: fds {warm['fds']} -> {end['fds']}")
        growth = (end["rss_kib"] - warm["rss_kib"]) / 1024
        if growth > args.rss_growth:
            failures.append(f"RSS grew {growth:.1f} MiB after warm-up (> {args.rss_growth})")
        internal = after["stats"].get("internal-errors", 0)
        if internal:
            failures.append(f"{internal} connection(s) ended in the server's internal-error path")
        if not ok:
            failures.append(f"good client failed after the fuzz: {why}")
        elif after["stats"].get("blocks-found", 0) <= end["stats"].get("blocks-found", 0):
            failures.append("good client's block was not accepted")
        else:
            print(
                f"good client after the fuzz: {why}; block accepted at height "
                f"{after['tip']['height']}"
            )
    finally:
        code = await srv.quit()
    if code != 0:
        failures.append(f"JDS process exit code {code}")
    for f in failures:
        print("FINDING:", f)
    print("no findings" if not failures else f"{len(failures)} finding(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: random, printed)")
    p.add_argument("--concurrency", type=int, default=48)
    p.add_argument("--progress", type=int, default=10_000)
    p.add_argument("--mempool", type=int, default=20)
    p.add_argument("--payees", type=int, default=20)
    p.add_argument("--rss-growth", type=float, default=32.0, help="MiB allowed after warm-up")
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
