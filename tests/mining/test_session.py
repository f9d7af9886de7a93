"""The sans-I/O Mining session against a real JD server and a job a JD client declared over
TCP + Noise (sv2-spec 05-Mining-Protocol.md §5.3): every SubmitShares.Error code, each refused
share crediting nothing; cross-connection misuse; extranonce limits; SetCustomMiningJob with
0x0003 on both connections (PR #203 §2); vardiff and UpdateChannel."""

from __future__ import annotations

from typing import Any

from payouts.node.kernel_chain import KernelChain
from sv2.jdc import DeclaredJob, build_set_custom_mining_job
from sv2.jds import JobDeclarationServer
from sv2.messages.common import SetupConnection, SetupConnectionError, SetupConnectionSuccess
from sv2.messages.extensions import RequestExtensions, RequestExtensionsSuccess
from sv2.messages.mining import (
    MINING_FLAG_REQUIRES_WORK_SELECTION,
    CloseChannel,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    UpdateChannel,
    UpdateChannelError,
)
from sv2.mining import errors as E
from sv2.mining.events import AcceptedShare, BlockCandidate
from sv2.mining.session import MiningSession
from sv2.mining.shared import MiningShared
from sv2.mining.targets import REGTEST_POW_LIMIT, target_bytes, target_of
from sv2.session import Close
from tests.mining.helpers import USER, miner_job_of, run_with_declared_job, shared_for

MAX = target_bytes((1 << 256) - 1)
NOW = 1_700_000_000


def setup(sh: MiningShared, cid: int = 1, *, flags: int = MINING_FLAG_REQUIRES_WORK_SELECTION,
          ext: bool = True) -> MiningSession:
    s = MiningSession(cid, sh)
    out = s.receive(SetupConnection(0, 2, 2, flags, "", 0, "t", "", "", ""))
    assert isinstance(out[0], SetupConnectionSuccess)
    if ext:
        assert s.receive(RequestExtensions(1, (0x0003,))) == [RequestExtensionsSuccess(1, (3,))]
    return s


def open_ext(s: MiningSession, user: str = USER, *, max_target: bytes = MAX,
             min_size: int = 4) -> OpenExtendedMiningChannelSuccess:
    out = s.receive(OpenExtendedMiningChannel(7, user, 0.0, max_target, min_size))
    assert isinstance(out[0], OpenExtendedMiningChannelSuccess), out
    return out[0]


def custom(s: MiningSession, job: DeclaredJob, channel_id: int, **kw: Any) -> Any:
    out = s.receive(build_set_custom_mining_job(job, channel_id=channel_id, request_id=3, **kw))
    return out[0]


def submit(s: MiningSession, ch: int, job_id: int, en: bytes, nonce: int, *, seq: int = 1,
           ntime: int = NOW, version: int = 0x20000000) -> list[Any]:
    return s.receive(SubmitSharesExtended(ch, seq, job_id, nonce, ntime, version, en))


def error_of(out: list[Any]) -> str:
    errs = [o for o in out if isinstance(o, SubmitSharesError)]
    assert len(errs) == 1 and not any(isinstance(o, AcceptedShare) for o in out), out
    return errs[0].error_code


def test_custom_job_shares_every_error_code() -> None:
    async def body(chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob,
                   now: list[float]) -> None:
        sh = shared_for(srv, initial_difficulty=4)
        s = setup(sh)
        ok = open_ext(s)
        assert ok.extranonce_size == 4 and len(ok.extranonce_prefix) == 4
        assert ok.target == target_bytes(target_of(4, REGTEST_POW_LIMIT))
        reply = custom(s, job, ok.channel_id)
        assert isinstance(reply, SetCustomMiningJobSuccess), reply
        jid = reply.job_id
        mj = miner_job_of(job)
        ntime = job.template.time
        en = b"\x00\x00\x00\x01"
        full = ok.extranonce_prefix + en
        target = target_of(4, REGTEST_POW_LIMIT)
        nonce, h = mj.find(full, ntime, lambda v: v <= target)
        # Refusals first: each costs nothing.
        assert error_of(submit(s, 99, jid, en, nonce, ntime=ntime)) == E.INVALID_CHANNEL_ID
        assert error_of(submit(s, ok.channel_id, 12345, en, nonce, ntime=ntime)) == (
            E.INVALID_JOB_ID)
        assert error_of(submit(s, ok.channel_id, jid, en + b"\x00", nonce, ntime=ntime)) == (
            E.INVALID_EXTRANONCE_SIZE)
        assert error_of(submit(s, ok.channel_id, jid, en, nonce, ntime=ntime,
                               version=0x20000001)) == E.INVALID_VERSION
        assert error_of(submit(s, ok.channel_id, jid, en, nonce, ntime=ntime - 1)) == (
            E.NTIME_OUT_OF_RANGE)
        assert error_of(submit(s, ok.channel_id, jid, en, nonce, ntime=NOW + 7201)) == (
            E.NTIME_OUT_OF_RANGE)
        bad, _ = mj.find(full, ntime, lambda v: v > REGTEST_POW_LIMIT)
        assert error_of(submit(s, ok.channel_id, jid, en, bad, ntime=ntime)) == (
            E.DIFFICULTY_TOO_LOW)
        assert sh.stats.get("shares-accepted") is None
        # The good share: credited at the channel's difficulty and T of the declaration; on
        # regtest it also meets nBits, so it is a block candidate.
        out = submit(s, ok.channel_id, jid, en, nonce, seq=5, ntime=ntime)
        acc = [o for o in out if isinstance(o, AcceptedShare)]
        assert len(acc) == 1
        a = acc[0]
        assert (a.account, a.difficulty, a.sequence_number, a.share_hash) == (USER, 4, 5, h)
        assert a.revenue == job.template.revenue
        blocks = [o for o in out if isinstance(o, BlockCandidate)]
        assert len(blocks) == 1
        block = blocks[0].job.block(en, 0x20000000, ntime, nonce)
        assert block.block_hash == h and block.meets_target()
        # BIP-323 general-purpose bits may roll: another share on a rolled version.
        v = 0x20000000 | 0x00ABC000
        n2, _ = mj.find(full, ntime, lambda x: x <= target, version=v)
        assert any(isinstance(o, AcceptedShare) for o in submit(
            s, ok.channel_id, jid, en, n2, ntime=ntime, version=v))
        # The same share again: a duplicate.
        assert error_of(submit(s, ok.channel_id, jid, en, nonce, ntime=ntime)) == (
            E.DUPLICATE_SHARE)
        # A new tip: shares on the old one are stale.
        sh.set_tip(job.template.prev_hash)
        sh.set_tip(b"\x11" * 32)
        n3, _ = mj.find(full, ntime, lambda x: x <= target, start=n2 + 1)
        assert error_of(submit(s, ok.channel_id, jid, en, n3, ntime=ntime)) == E.STALE_SHARE
        assert sh.stats["shares-accepted"] == 2

    run_with_declared_job(body)


def test_cross_connection_and_token_misuse() -> None:
    async def body(chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob,
                   now: list[float]) -> None:
        sh = shared_for(srv)
        a, b = setup(sh, 1), setup(sh, 2)
        ca, cb = open_ext(a), open_ext(b, "miner-2")
        assert ca.extranonce_prefix != cb.extranonce_prefix
        # Another user's token: refused like an unknown one.
        assert custom(b, job, cb.channel_id).error_code == "invalid-mining-job-token"
        reply = custom(a, job, ca.channel_id)
        assert isinstance(reply, SetCustomMiningJobSuccess)
        # B cannot submit on A's job (its channel does not hold it) nor on A's channel id
        # (B's own channel 1 is a different channel: the job is unknown there).
        en = b"\x00" * 4
        assert error_of(submit(b, cb.channel_id, reply.job_id, en, 0)) == E.INVALID_JOB_ID
        assert error_of(submit(b, 5, reply.job_id, en, 0)) == E.INVALID_CHANNEL_ID
        # The token is single use.
        assert custom(a, job, ca.channel_id).error_code == "invalid-mining-job-token"

    run_with_declared_job(body)


def test_extension_0x0003_needed_on_the_mining_connection() -> None:
    async def body(chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob,
                   now: list[float]) -> None:
        sh = shared_for(srv)
        s = setup(sh, ext=False)
        ok = open_ext(s)
        # The TLV of an extension this connection did not negotiate, then the job declared
        # under 0x0003 without the TLV: both refused (PR #203 §2), the token not spent.
        assert custom(s, job, ok.channel_id).error_code == "invalid-payout-distribution"
        assert custom(s, job, ok.channel_id, distribution_tlv=False).error_code == (
            "invalid-payout-distribution")
        s2 = setup(sh, 2)
        ok2 = open_ext(s2)
        assert isinstance(custom(s2, job, ok2.channel_id), SetCustomMiningJobSuccess)

    run_with_declared_job(body)


def test_custom_job_needs_work_selection_and_matching_extranonce() -> None:
    async def body(chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob,
                   now: list[float]) -> None:
        sh = shared_for(srv)
        s = setup(sh, flags=0)
        ok = open_ext(s)
        assert custom(s, job, ok.channel_id).error_code == E.WORK_SELECTION_NOT_ENABLED
        sh2 = shared_for(srv, extranonce_size=6)
        s2 = setup(sh2)
        ok2 = open_ext(s2)  # 4 + 6 bytes: the declaration reserved 8
        reply = custom(s2, job, ok2.channel_id)
        assert isinstance(reply, SetCustomMiningJobError)
        assert reply.error_code == E.EXTRANONCE_SIZE_MISMATCH

    run_with_declared_job(body)


def test_setup_and_channel_refusals() -> None:
    sh = shared_for(None, extranonce_prefix_size=1, max_channels_per_connection=300)
    s = MiningSession(1, sh)
    out = s.receive(SetupConnection(0, 2, 2, MINING_FLAG_REQUIRES_WORK_SELECTION, "", 0, "", "",
                                    "", ""))
    assert isinstance(out[0], SetupConnectionError) and isinstance(out[1], Close)
    s = setup(sh, flags=0, ext=False)

    def refused(msg: Any) -> str:
        out = s.receive(msg)
        assert isinstance(out[0], OpenMiningChannelError), out
        return out[0].error_code

    assert refused(OpenExtendedMiningChannel(1, "nobody", 0.0, MAX, 4)) == E.UNKNOWN_USER
    assert refused(OpenExtendedMiningChannel(1, USER, 0.0, MAX, 5)) == (
        E.EXTRANONCE_SIZE_TOO_LARGE)
    assert refused(OpenExtendedMiningChannel(1, USER, 0.0, bytes(32), 4)) == (
        E.MAX_TARGET_OUT_OF_RANGE)
    assert refused(OpenExtendedMiningChannel(1, USER, float("nan"), MAX, 4)) == (
        E.INVALID_HASH_RATE)
    # A one-byte prefix space holds 256 channels; the 257th is refused, never wrapped.
    prefixes = {open_ext(s).extranonce_prefix for _ in range(256)}
    assert len(prefixes) == 256
    assert refused(OpenStandardMiningChannel(1, USER, 0.0, MAX)) == E.EXTRANONCE_SPACE_EXHAUSTED
    # Closing one frees its prefix for the next channel.
    s.receive(CloseChannel(10, "bye"))
    assert open_ext(s).extranonce_prefix not in prefixes - {bytes([9])}
    # Closing the connection frees them all.
    s.closed()
    assert len(sh.allocator) == 0


def test_update_channel_and_vardiff() -> None:
    clock = [0.0]
    sh = shared_for(None, shares_per_minute=6.0, initial_difficulty=100)
    sh.clock = lambda: clock[0]
    s = setup(sh, flags=0, ext=False)
    ok = open_ext(s)
    ch = s.channels[ok.channel_id]
    assert s.receive(UpdateChannel(99, 0.0, MAX)) == [UpdateChannelError(99, E.INVALID_CHANNEL_ID)]
    # A lower maximum target MUST be reflected with SetTarget (§5.3.7).
    lower = target_bytes(target_of(1000, REGTEST_POW_LIMIT))
    out = s.receive(UpdateChannel(ok.channel_id, 0.0, lower))
    assert out == [SetTarget(ok.channel_id, lower)] and ch.difficulty == 1000
    # No shares for a minute: the difficulty falls, but not below the miner's maximum target.
    clock[0] = 61.0
    assert s.tick() == [] and ch.difficulty == 1000
    # Raise the floor back and let vardiff work: ×4 at most per step when shares flood in.
    s.receive(UpdateChannel(ok.channel_id, 0.0, MAX))
    ch.vardiff.min_difficulty = 1
    for _ in range(11):
        ch.vardiff.on_share(clock[0] + 1)
    new = ch.vardiff.on_share(clock[0] + 1)
    assert new == 4000
