"""The sans-I/O Mining session's Coinbase-only check (sv2.coinbase_only) against a real JD server
built for Coinbase-only connections and a JD client that allocated its tokens over TCP +
Noise: the codes the served test does not reach (nbits, coinbase_prefix, undecodable outputs,
a stale tip, F >= T, an expired token, the TLV without 0x0003 here), each refusal spending
nothing; an accepted job's shares credited at the pool template's T."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable

from payouts.distribution.model import AdditionalOutput, Distribution
from payouts.node.kernel_chain import KernelChain
from payouts.tx.compact import ser_compact_size
from payouts.tx.script import bip34_height
from payouts.tx.txout import TxOut
from sv2.jdc import JobDeclarationClient, JobTemplate, build_set_custom_mining_job
from sv2.jds import JobDeclarationServer
from sv2.job_coinbase import build_job_coinbase, serialize_output_vector
from sv2.messages.mining import (
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
)
from sv2.mining.events import AcceptedShare, BlockCandidate
from sv2.mining.pool_job import build_pool_job
from sv2.mining.session import MiningSession
from sv2.mining.shared import MiningShared
from sv2.mining.targets import REGTEST_POW_LIMIT, target_of
from tests.jdc.helpers import ChainNode, make_distribution, setup_chain, start_server
from tests.jdc.test_client_e2e import client_for
from tests.jds.helpers import CtvClaimingKernelNode
from tests.jds.test_modes import CTV
from tests.mining.helpers import USER, miner_job_of, shared_for
from tests.mining.test_session import open_ext, setup, submit

Body = Callable[[MiningShared, JobDeclarationServer, JobDeclarationClient, JobTemplate,
                 list[float]], Awaitable[None]]


def run(body: Body, dist: Distribution | None = None, *, ctv: bool = False) -> None:
    """``body`` with a JD server for Coinbase-only connections and a client on it; ``ctv``:
    the distribution settles in ctv mode, on a node that claims CTV (the kernel does not
    enforce it: this is the check's codec and comparison, not a fan-out's enforcement)."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            node = CtvClaimingKernelNode(chain) if ctv else ChainNode(chain)
            now = [1_000.0]
            srv = await start_server(node, dist or make_distribution(1), coinbase_only=True,
                                     clock=lambda: now[0], **({"mode": CTV} if ctv else {}))
            try:
                async with client_for(srv, user_identifier=USER, coinbase_only=True,
                                      extranonce_size=8, node=node) as c:
                    bt = await node.block_template()
                    sh = shared_for(srv, initial_difficulty=2)
                    cur = srv.book.current
                    assert cur is not None
                    sh.pool_job = build_pool_job(bt, cur, extranonce_size=8)
                    await body(sh, srv, c, JobTemplate.from_block_template(bt), now)
            finally:
                await srv.stop()

    asyncio.run(main())


def _msg(job: object, channel_id: int, **fields: object) -> SetCustomMiningJob:
    m = build_set_custom_mining_job(job, channel_id=channel_id, request_id=3,  # type: ignore[arg-type]
                                    coinbase_only=True)
    return dataclasses.replace(m, **fields)  # type: ignore[arg-type]


def _code(s: MiningSession, msg: SetCustomMiningJob) -> str:
    out = s.receive(msg)
    assert len(out) == 1 and not isinstance(out[0], SetCustomMiningJobSuccess), out
    return str(out[0].error_code)  # type: ignore[union-attr]


def _outputs(outs: list[TxOut]) -> bytes:
    return ser_compact_size(len(outs)) + b"".join(o.serialize() for o in outs)


def test_coinbase_only_codes_and_crediting() -> None:
    async def body(sh: MiningShared, srv: JobDeclarationServer, c: JobDeclarationClient,
                   t: JobTemplate, now: list[float]) -> None:
        s = setup(sh)
        ch = open_ext(s)
        job = await c.coinbase_only_job(t)
        ok = _msg(job, ch.channel_id)
        assert _code(s, _msg(job, ch.channel_id, nbits=0x1D00FFFF)) == (
            "invalid-job-param-value-nbits")
        other_height = bip34_height(t.height + 1) + ok.coinbase_prefix[len(bip34_height(
            t.height)):]
        assert _code(s, _msg(job, ch.channel_id, coinbase_prefix=other_height)) == (
            "invalid-job-param-value-coinbase_prefix")
        assert _code(s, _msg(job, ch.channel_id, coinbase_prefix=ok.coinbase_prefix + bytes(8))
                     ) == "invalid-job-param-value-coinbase_prefix"
        assert _code(s, _msg(job, ch.channel_id, coinbase_prefix=b"\x01\x01")) == (
            "invalid-job-param-value-coinbase_prefix")  # not Core's minimal push
        assert _code(s, _msg(job, ch.channel_id,
                             coinbase_tx_outputs=ok.coinbase_tx_outputs + b"\x00")) == (
            "invalid-job-param-value-coinbase_tx_outputs")
        assert _code(s, _msg(job, ch.channel_id, coinbase_tx_outputs=b"\x00")) == (
            "invalid-job-param-value-coinbase_tx_outputs")
        # No declaration to compare with: what consensus refuses outright is refused.
        assert _code(s, _msg(job, ch.channel_id, version=3)) == (
            "invalid-job-param-value-version")  # bad-version since BIP-65
        assert _code(s, _msg(job, ch.channel_id, version=0xFFFFFFFF)) == (
            "invalid-job-param-value-version")  # -1 as Core's signed int32
        far = int(sh.wall_clock()) + 2 * 60 * 60 + 60
        assert _code(s, _msg(job, ch.channel_id, min_ntime=far)) == (
            "invalid-job-param-value-min_ntime")  # every block would be time-too-new
        # A Mining connection without 0x0003 cannot carry the TLV (PR #203 §2).
        s2 = setup(sh, 2, ext=False)
        ch2 = open_ext(s2)
        assert _code(s2, _msg(job, ch2.channel_id)) == "invalid-payout-distribution"
        assert sh.stats.get("custom-jobs-accepted") is None
        # Untouched, it is accepted (no refusal spent the token); its share is credited at
        # the pool template's T.
        out = s.receive(ok)
        assert isinstance(out[0], SetCustomMiningJobSuccess), out
        mj = miner_job_of(job)
        en = b"\x00\x00\x00\x07"
        target = target_of(2, REGTEST_POW_LIMIT)
        nonce, h = mj.find(ch.extranonce_prefix + en, t.time, lambda v: v <= target)
        res = submit(s, ch.channel_id, out[0].job_id, en, nonce, ntime=t.time)
        acc = [o for o in res if isinstance(o, AcceptedShare)]
        assert len(acc) == 1 and acc[0].share_hash == h
        assert sh.pool_job is not None and acc[0].revenue == sh.pool_job.revenue
        cand = [o for o in res if isinstance(o, BlockCandidate)]
        assert len(cand) == 1
        block = cand[0].job.block(en, 0x20000000, t.time, nonce)
        assert block.block_hash == h and block.meets_target()
        assert block.coinbase.outputs == tuple(job.coinbase.outputs)
        # A tip the chain left.
        job2 = await c.coinbase_only_job(t)
        sh.set_tip(t.prev_hash)
        sh.set_tip(b"\x11" * 32)
        assert _code(s, _msg(job2, ch.channel_id)) == "invalid-job-param-value-prev_hash"
        # An expired token (the JD server's token lifetime, 600 s by default).
        now[0] += 601
        sh.stale_tips.clear()
        assert _code(s, _msg(job2, ch.channel_id)) == "invalid-mining-job-token"

    run(body)


def test_fixed_outputs_at_or_above_the_claimed_t_are_unsatisfiable() -> None:
    base = make_distribution(1)
    dist = dataclasses.replace(
        base, additional_outputs=(AdditionalOutput(b"\x00\x14" + b"\x55" * 20, 4_000_000_000),))

    async def body(sh: MiningShared, srv: JobDeclarationServer, c: JobDeclarationClient,
                   t: JobTemplate, now: list[float]) -> None:
        s = setup(sh)
        ch = open_ext(s)
        job = await c.coinbase_only_job(t)
        commitment = job.coinbase.outputs[-1]
        pool = job.coinbase.outputs[0]
        # The coinbase claims 3 BTC, below the 4 BTC of fixed outputs: F >= T.
        low = _outputs([TxOut(3_000_000_000, pool.script), commitment])
        assert _code(s, _msg(job, ch.channel_id, coinbase_tx_outputs=low)) == (
            "unsatisfiable-distribution")
        assert isinstance(s.receive(_msg(job, ch.channel_id))[0], SetCustomMiningJobSuccess)

    run(body, dist)


def test_settlement_modes_in_coinbase_only_mode() -> None:
    async def body(sh: MiningShared, srv: JobDeclarationServer, c: JobDeclarationClient,
                   t: JobTemplate, now: list[float]) -> None:
        s = setup(sh)
        ch = open_ext(s)
        job = await c.coinbase_only_job(t)
        assert job.mode == "ctv" and len(job.payout_outputs) == 1
        d = c.distribution
        assert d is not None
        # The coinbase-mode outputs are not what this distribution settles to.
        plain_cb = build_job_coinbase(d, t, extranonce_size=8, tag=b"")
        wrong = _msg(job, ch.channel_id,
                     coinbase_tx_outputs=serialize_output_vector(plain_cb.outputs))
        assert _code(s, wrong) == "invalid-settlement-outputs"
        assert isinstance(s.receive(_msg(job, ch.channel_id))[0], SetCustomMiningJobSuccess)
        # A JD connection that did not negotiate 0x4003 settles coinbase-mode distributions only
        # (docs/extensions/0x4003 §8): its token carries that to the pool.
        async with client_for(srv, user_identifier=USER, coinbase_only=True, extranonce_size=8,
                              extensions=(0x0003,)) as plain:
            job2 = await plain.coinbase_only_job(t)
            assert job2.mode == "coinbase"
            assert _code(s, _msg(job2, ch.channel_id)) == "settlement-mode-not-negotiated"

    run(body, make_distribution(1, payees=12), ctv=True)


def test_mutated_coinbase_only_jobs_get_an_error_or_success_never_a_crash() -> None:
    """Random byte flips, truncations and extensions of the coinbase fields: each answer is a
    SetCustomMiningJob reply, never an exception; a job the pool commits to pays the
    distribution exactly (the token is spent by the first success)."""

    async def body(sh: MiningShared, srv: JobDeclarationServer, c: JobDeclarationClient,
                   t: JobTemplate, now: list[float]) -> None:
        s = setup(sh)
        ch = open_ext(s)
        job = await c.coinbase_only_job(t)
        ok = _msg(job, ch.channel_id)
        rng = random.Random(12)
        fields = ("coinbase_tx_outputs", "coinbase_prefix")
        for _ in range(400):
            name = rng.choice(fields)
            raw = bytearray(getattr(ok, name))
            op = rng.randrange(3)
            if op == 0 and raw:
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            elif op == 1:
                del raw[rng.randrange(len(raw) + 1):]
            else:
                raw += rng.randbytes(rng.randrange(1, 12))
            mutated = dataclasses.replace(ok, **{name: bytes(raw)})
            out = s.receive(mutated)
            assert len(out) == 1 and isinstance(
                out[0], SetCustomMiningJobSuccess | SetCustomMiningJobError), out
            if isinstance(out[0], SetCustomMiningJobSuccess):
                # A variant the spec allows (say, other bytes after the height push): it still
                # pays the distribution exactly, at the template's height.
                mj = s.channels[ch.channel_id].jobs[out[0].job_id].declared
                n = len(job.payout_outputs)
                assert mj.coinbase.tx.outputs[:n] == job.payout_outputs
                assert mj.height == t.height
        # The token is single use: one success at most.
        assert sh.stats.get("custom-jobs-accepted", 0) <= 1

    run(body)


def test_grace_window_for_the_previous_distribution() -> None:
    """PR #203 §7.3 as the JD server has it: the previous distribution stays accepted for the
    grace period after a new one (without a settlement), then is stale."""

    async def body(sh: MiningShared, srv: JobDeclarationServer, c: JobDeclarationClient,
                   t: JobTemplate, now: list[float]) -> None:
        s = setup(sh)
        ch = open_ext(s)
        d1 = c.distribution
        assert d1 is not None
        old = await c.coinbase_only_job(t)
        srv.publish(make_distribution(2))
        await c.wait_for_distribution(after=d1.distribution_id)
        assert isinstance(s.receive(_msg(old, ch.channel_id))[0], SetCustomMiningJobSuccess)
        older = await c.coinbase_only_job(t, distribution=d1)
        now[0] += srv.limits.grace_period + 1
        assert _code(s, _msg(older, ch.channel_id)) == "stale-payout-distribution"
        new = await c.coinbase_only_job(t)
        assert new.distribution_id == 2
        assert isinstance(s.receive(_msg(new, ch.channel_id))[0], SetCustomMiningJobSuccess)

    run(body)
