"""The share path's shortcuts (issue 12's speed target) give exactly what the long way gives:
the merkle roots a job caches per extranonce (sv2-spec §5.3.16) equal the block rebuilt the
way PushSolution rebuilds it, whatever the cache held before; a SubmitSharesExtended frame
decodes to the same item with or without the decoder's fast path (§3.2, §5.3.12); vardiff's
per-share shortcut returns what the full retarget returns; connections waiting on a batch
being written do not each write a few shares after it (§5.3.13's batched Success)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.interface import BlockTemplate, TemplateTx
from payouts.settlement.modes import SettlementMode
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.connection import MalformedMessage, UnknownMessage, decode_received
from sv2.distribution_book import Published
from sv2.errors import DecodeError
from sv2.framing import Frame
from sv2.messages.base import Message, decode_message
from sv2.messages.mining import SubmitSharesExtended
from sv2.messages.payouts import DistributionIdTlv
from sv2.mining.events import AcceptedShare
from sv2.mining.jobs import ROOT_CACHE, MiningJob
from sv2.mining.pool_job import build_pool_job
from sv2.mining.server import MiningServer
from sv2.mining.shared import MiningPolicy, MiningShared
from sv2.mining.targets import Vardiff


def _job(txs: int = 5) -> MiningJob:
    payees = tuple(Payee(b"\x00\x14" + i.to_bytes(20, "big"), 1_000 + i, 330) for i in range(3))
    pub = Published(Distribution(1, PoolPayout(b"\x00\x14" + bytes(20), 500), payees), None,
                    SettlementMode(), 0.0, False)
    template_txs = tuple(
        TemplateTx(Tx(2, (TxIn(OutPoint(bytes([i + 1]) * 32, 0), b"", 0xFFFFFFFD,
                               (bytes(72),)),),
                      (TxOut(10_000, b"\x00\x14" + bytes(20)),), 0), 1_000, 4)
        for i in range(txs))
    bt = BlockTemplate(0x20000000, os.urandom(32), 900_000, 0x17034219, 1_760_000_000,
                       312_500_000 + 1_000 * txs, template_txs)
    declared = build_pool_job(bt, pub, extranonce_size=8)
    sh = MiningShared(MiningPolicy(), known_user=lambda _: True)
    return MiningJob(1, 1, declared, b"\x00\x00\x00\x09", min_ntime=1_760_000_000,
                     parts=sh.parts(declared))


def test_cached_merkle_roots_match_the_rebuilt_block() -> None:
    job = _job()
    assert len(job.merkle_path) == 3  # 6 leaves
    rng = random.Random(7)
    # More extranonces than the cache holds, each asked several times in a shuffled order:
    # hits, misses and the clear when it is full all happen.
    extranonces = [rng.randbytes(4) for _ in range(3 * ROOT_CACHE)]
    asks = extranonces * 3
    rng.shuffle(asks)
    for en in asks:
        version, ntime, nonce = 0x20000000 | (rng.getrandbits(16) << 13), 1_760_000_001, 5
        block = job.block(en, version, ntime, nonce)
        assert job.merkle_root(en) == block.header.merkle_root
        assert job.share_hash(en, version, ntime, nonce) == block.block_hash
    assert job._roots is not None and len(job._roots) <= ROOT_CACHE


def test_a_cached_root_is_never_another_extranonces() -> None:
    job = _job()
    a, b = b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"
    ra = job.merkle_root(a)
    assert job.merkle_root(b) != ra
    assert job.merkle_root(a) == ra == job.block(a, 0x20000000, 0, 0).header.merkle_root


def _general(raw: bytes) -> object:
    """What decode_received gave before its fast path."""
    frame = Frame.decode(raw)
    try:
        return decode_message(frame)
    except Exception as exc:  # the same classes decode_received maps
        return type(exc)


def test_decode_received_matches_the_general_decoder() -> None:
    plain = SubmitSharesExtended(1, 2, 3, 4, 5, 0x20000000, b"\x01\x02\x03\x04")
    with_tlv = SubmitSharesExtended(1, 2, 3, 4, 5, 0x20000000, b"\x01",
                                    tlvs=(DistributionIdTlv(9),))
    for msg in (plain, with_tlv, SubmitSharesExtended(0, 0, 0, 0, 0, 0, b"")):
        for bit in (True, False):
            raw = msg.encode_frame(channel_msg=bit)
            got = decode_received(raw)
            assert got == msg == _general(raw)
            assert type(got) is SubmitSharesExtended
    raw = plain.encode_frame()
    # Truncated, an extranonce over 32 bytes, a length byte past the end: malformed, and the
    # item names the frame, as the general path does.
    for payload in (raw[6:-1], raw[6:30] + bytes([33]) + bytes(33), raw[6:30] + b"\x09\x00"):
        bad = raw[:3] + len(payload).to_bytes(3, "little") + payload
        got = decode_received(bad)
        assert isinstance(got, MalformedMessage), got
        assert got.frame.msg_type == 0x1B and got.frame.payload == payload
    # msg_type 0x1B of another extension is not a SubmitSharesExtended.
    other = b"\x01\x00\x1b" + len(raw[6:]).to_bytes(3, "little") + raw[6:]
    assert isinstance(decode_received(other), UnknownMessage)


def test_the_fast_path_skips_no_frame_check() -> None:
    """decode_received skips check_frame for SubmitSharesExtended: only right while that
    message keeps the default, which refuses nothing (sv2.messages.base.decode_message)."""
    assert "check_frame" not in vars(SubmitSharesExtended)
    assert SubmitSharesExtended.check_frame.__func__ is Message.check_frame.__func__  # type: ignore[attr-defined]


def _outcome(item: object) -> object:
    if isinstance(item, MalformedMessage | UnknownMessage):
        return type(item), item.frame
    return item


def test_decode_received_equals_the_general_path_on_mutated_frames() -> None:
    """Random payloads under a SubmitSharesExtended header (either channel bit): the same
    message, or the same MalformedMessage naming the same frame, as the general path."""
    rng = random.Random(3)
    base = SubmitSharesExtended(1, 2, 3, 4, 5, 0x20000000, b"\x01\x02\x03\x04").encode()
    for _ in range(5_000):
        payload = bytearray(base)
        for _ in range(rng.randint(0, 4)):
            op = rng.randrange(3)
            if op == 0 and payload:
                payload[rng.randrange(len(payload))] = rng.randrange(256)
            elif op == 1 and payload:
                del payload[rng.randrange(len(payload)):]
            else:
                payload += rng.randbytes(rng.randint(1, 40))
        head = rng.choice((b"\x00\x80\x1b", b"\x00\x00\x1b"))
        raw = head + len(payload).to_bytes(3, "little") + bytes(payload)
        frame = Frame.decode(raw)
        try:
            expected: object = decode_message(frame)
        except DecodeError:
            expected = (MalformedMessage, frame)
        assert _outcome(decode_received(raw)) == expected, bytes(payload).hex()


def test_vardiff_shortcut_equals_the_full_retarget() -> None:
    rng = random.Random(11)
    for _ in range(200):
        spm, interval = rng.choice((0.5, 6.0, 20.0, 90.0)), rng.choice((1.0, 30.0, 60.0))
        fast = Vardiff(rng.randint(1, 10_000), spm, min_difficulty=rng.randint(1, 4),
                       retarget_interval=interval)
        slow = Vardiff(fast.difficulty, spm, min_difficulty=fast.min_difficulty,
                       retarget_interval=interval)
        now = 0.0
        for _ in range(300):
            now += rng.expovariate(spm / 60.0) * rng.choice((0.1, 1.0, 5.0))
            slow.shares += 1
            assert fast.on_share(now) == slow.retarget(now)
            assert (fast.difficulty, fast.shares, fast.window_start) == (
                slow.difficulty, slow.shares, slow.window_start)


def _share(i: int) -> AcceptedShare:
    return AcceptedShare(1, 1, i, "miner-1", "1/1", 1, 1, 0, 0, i.to_bytes(32, "little"))


def test_connections_waiting_on_a_write_do_not_write_a_few_shares_each() -> None:
    """A batch being written, the queue full again, two connections waiting to flush: the
    first takes the queue, the second finds less than a batch and returns; the timer's (and
    stop's) flush still writes whatever is queued."""

    async def main() -> None:
        gate = asyncio.Event()
        batches: list[int] = []

        async def on_shares(batch: Sequence[AcceptedShare]) -> None:
            batches.append(len(batch))
            await gate.wait()

        server = MiningServer(identity=lambda: None,  # type: ignore[arg-type,return-value]
                              node=None,  # type: ignore[arg-type]
                              policy=MiningPolicy(), known_user=lambda _: True,
                              on_shares=on_shares, batch_size=3)
        server._queue = [_share(i) for i in range(3)]
        first = asyncio.create_task(server.flush(3))
        await asyncio.sleep(0)
        assert batches == [3]  # being written
        server._queue += [_share(i) for i in range(3, 6)]
        waiters = [asyncio.create_task(server.flush(3)) for _ in range(2)]
        await asyncio.sleep(0)
        server._queue.append(_share(6))
        gate.set()
        await asyncio.gather(first, *waiters)
        assert batches == [3, 4] and server._queue == []
        assert server.stats["shares-recorded"] == 7
        server._queue.append(_share(7))
        await server.flush(3)  # under a batch: stays queued
        assert batches == [3, 4]
        await server.flush()  # the timer's flush
        assert batches == [3, 4, 1] and server.stats["shares-recorded"] == 8

    asyncio.run(main())
