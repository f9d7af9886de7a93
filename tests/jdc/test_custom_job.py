"""SetCustomMiningJob: the JD client's builder and the pool's check against the job its JDS
accepted (sv2-spec 05-Mining-Protocol.md §5.3.18-§5.3.20; PR #203 distribution_id TLV).

A real declaration over TCP + Noise gives the token; the builder's message passes, every
single-field tampering is refused with its own code, expired / foreign / reused tokens are
refused, and the coinbase the pool would build from the message mines a block that
libbitcoinkernel accepts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from payouts.node.kernel_chain import KernelChain
from payouts.tx.block import Block, BlockHeader, check_pow
from payouts.tx.merkle import root_from_path
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.custom_job import CustomJobChecker, check_custom_job
from sv2.framing import Frame
from sv2.jdc import (
    DeclaredJob,
    JobTemplate,
    build_set_custom_mining_job,
    parse_output_vector,
    serialize_output_vector,
)
from sv2.jds import JobDeclarationServer
from sv2.messages.base import decode_message
from sv2.messages.mining import (
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
)
from sv2.messages.payouts import DistributionIdTlv
from tests.jdc.helpers import ChainNode, fee_tx, make_distribution, setup_chain, start_server
from tests.jdc.test_client_e2e import client_for

Clock = list[float]


Body = Callable[[KernelChain, JobDeclarationServer, DeclaredJob, Clock], Any]


def _run(body: Body, *, after_disconnect: Body | None = None, version: int | None = None) -> None:
    """A JDS (clock ``now``) and a job it accepted, with two transactions in the template
    (declared with header ``version`` if given); the JD connection stays open during ``body``
    (the JDS drops a connection's tokens when it closes, as SRI does) and ``after_disconnect``
    runs once it is closed."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            now: Clock = [1_000.0]
            srv_node, cli_node = ChainNode(chain), ChainNode(chain)
            for h, fee in ((1, 1_200), (2, 800)):
                tx = fee_tx(chain, h, fee)
                srv_node.add_mempool(tx)
                cli_node.add_mempool(tx)
            srv = await start_server(srv_node, make_distribution(1), clock=lambda: now[0])
            try:
                async with client_for(srv, user_identifier="miner-1") as c:
                    template = JobTemplate.from_block_template(await cli_node.block_template())
                    if version is not None:
                        template = replace(template, version=version)
                    job = await c.declare_job(template)
                    assert len(template.transactions) == 2
                    await body(chain, srv, job, now)
                if after_disconnect is not None:
                    for _ in range(100):  # the server notices the EOF asynchronously
                        if srv.connections == 0:
                            break
                        await asyncio.sleep(0.01)
                    await after_disconnect(chain, srv, job, now)
            finally:
                await srv.stop()

    asyncio.run(main())


def _error(reply: SetCustomMiningJobSuccess | SetCustomMiningJobError) -> str:
    assert isinstance(reply, SetCustomMiningJobError), reply
    return reply.error_code


def _passes(srv: JobDeclarationServer, msg: SetCustomMiningJob, now: float) -> bool:
    """The field checks alone (no token spent)."""
    job = srv.declared_job(msg.mining_job_token)
    assert job is not None
    check_custom_job(msg, job, srv.book, now)
    return True


def _outputs_with(msg: SetCustomMiningJob, i: int, out: TxOut | None) -> bytes:
    outs = list(parse_output_vector(msg.coinbase_tx_outputs))
    if out is None:
        outs.append(TxOut(0, b"\x6a"))
    else:
        outs[i] = out
    return serialize_output_vector(outs)


def test_builder_message_passes_and_mines_a_block() -> None:
    async def body(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        msg = build_set_custom_mining_job(job, channel_id=7, request_id=3)
        assert msg.mining_job_token == job.token and msg.tlvs == (DistributionIdTlv(1),)
        # The frame survives the codec, TLV included (channel_msg = 1 since PR #196).
        frame = msg.to_frame()
        assert frame.channel_msg and decode_message(Frame(0x8000, 0x22, frame.payload)) == msg
        checker = CustomJobChecker(srv)
        reply = checker.check(msg, user_identity="miner-1")
        assert reply == SetCustomMiningJobSuccess(7, 3, 1)
        assert checker.accepted[1].token == job.token
        # The pool's coinbase for this job: coinbase_prefix + the channel's extranonce, the
        # declared outputs; with the merkle path it mines a block the kernel accepts.
        cb = Tx(
            msg.coinbase_tx_version,
            (
                TxIn(
                    OutPoint(bytes(32), 0xFFFFFFFF),
                    msg.coinbase_prefix + b"pool-en:" + bytes(4),
                    msg.coinbase_tx_input_n_sequence,
                    (bytes(32),),
                ),
            ),
            parse_output_vector(msg.coinbase_tx_outputs),
            msg.coinbase_tx_locktime,
        )
        root = root_from_path(cb.txid, msg.merkle_path, 0)
        for nonce in range(1 << 16):
            header = BlockHeader(msg.version, msg.prev_hash, root, msg.min_ntime, msg.nbits, nonce)
            if check_pow(header.hash, msg.nbits):
                break
        block = Block(header, (cb, *job.template.transactions))
        chain.submit(block)
        assert chain.tip_hash == header.hash

    _run(body)


FIELD_TAMPERING: list[tuple[str, Callable[[SetCustomMiningJob], SetCustomMiningJob], str]] = [
    ("prev_hash", lambda m: replace(m, prev_hash=b"\x01" + m.prev_hash[1:]), "prev_hash"),
    ("nbits", lambda m: replace(m, nbits=m.nbits - 1), "nbits"),
    ("version", lambda m: replace(m, version=m.version ^ 0x40000000), "version"),
    ("version_low", lambda m: replace(m, version=0x00000001), "version"),
    # Bits 0-4 (BIP9 signalling, outside BIP323's general-purpose bits) are the declaration's:
    # with the BIP9 top bits alone these passed before the JDS recorded the declared version.
    ("version_bip9_bit0", lambda m: replace(m, version=m.version ^ 0x00000001), "version"),
    ("version_bip9_bit4", lambda m: replace(m, version=m.version ^ 0x00000010), "version"),
    ("version_bit31", lambda m: replace(m, version=m.version ^ 0x80000000), "version"),
    (
        "coinbase_tx_version",
        lambda m: replace(m, coinbase_tx_version=m.coinbase_tx_version + 1),
        "coinbase_tx_version",
    ),
    ("prefix_other", lambda m: replace(m, coinbase_prefix=b"\x02\x66\x00"), "coinbase_prefix"),
    ("prefix_empty", lambda m: replace(m, coinbase_prefix=b""), "coinbase_prefix"),
    (
        "prefix_9_bytes",
        lambda m: replace(m, coinbase_prefix=m.coinbase_prefix + b"/payouts"),
        "coinbase_prefix",
    ),
    (
        "nsequence",
        lambda m: replace(m, coinbase_tx_input_n_sequence=m.coinbase_tx_input_n_sequence ^ 1),
        "coinbase_tx_input_nSequence",
    ),
    (
        "commitment_output",
        lambda m: replace(
            m, coinbase_tx_outputs=_outputs_with(m, -1, TxOut(0, b"\x6a\x24" + bytes(36)))
        ),
        "coinbase_tx_outputs",
    ),
    (
        "extra_zero_output",
        lambda m: replace(m, coinbase_tx_outputs=_outputs_with(m, 0, None)),
        "coinbase_tx_outputs",
    ),
    (
        "locktime",
        lambda m: replace(m, coinbase_tx_locktime=m.coinbase_tx_locktime + 1),
        "coinbase_tx_locktime",
    ),
    (
        "merkle_path",
        lambda m: replace(m, merkle_path=(bytes(32), *m.merkle_path[1:])),
        "merkle_path",
    ),
    ("merkle_path_empty", lambda m: replace(m, merkle_path=()), "merkle_path"),
]


@pytest.mark.parametrize(("name", "tamper", "field"), FIELD_TAMPERING,
                         ids=[case[0] for case in FIELD_TAMPERING])
def test_every_field_tampering_is_rejected_with_its_code(
    name: str, tamper: Callable[[SetCustomMiningJob], SetCustomMiningJob], field: str
) -> None:
    async def body(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        good = build_set_custom_mining_job(job, channel_id=1, request_id=9)
        bad = tamper(good)
        assert bad != good
        checker = CustomJobChecker(srv)
        assert checker.check(bad) == SetCustomMiningJobError(
            1, 9, f"invalid-job-param-value-{field}"
        )
        # Nothing was spent: the untouched message still passes afterwards.
        assert isinstance(checker.check(good), SetCustomMiningJobSuccess)

    _run(body)


def test_payout_and_distribution_tampering_uses_pr203_codes() -> None:
    async def body(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        good = build_set_custom_mining_job(job, channel_id=1, request_id=9)
        checker = CustomJobChecker(srv)
        p0 = job.payout_outputs[0]
        # One satoshi moved from the pool output to the last payee: same total, wrong payout.
        outs = list(parse_output_vector(good.coinbase_tx_outputs))
        n = len(job.payout_outputs)
        outs[0] = TxOut(p0.value - 1, p0.script)
        outs[n - 1] = TxOut(outs[n - 1].value + 1, outs[n - 1].script)
        moved = replace(good, coinbase_tx_outputs=serialize_output_vector(outs))
        assert _error(checker.check(moved)) == "invalid-payout-distribution"
        wrong_id = replace(good, tlvs=(DistributionIdTlv(2),))
        assert _error(checker.check(wrong_id)) == "invalid-payout-distribution"
        # Without the TLV (Full-Template: it went on DeclareMiningJob) the job still passes,
        # and min_ntime is the miner's to choose (not part of the declaration).
        bare = replace(good, tlvs=(), min_ntime=good.min_ntime + 30)
        assert _passes(srv, bare, now[0])
        # A settlement invalidates distribution 1 (PR #203 §10): the pool stops committing.
        srv.publish(make_distribution(2), settlement=True)
        assert _error(checker.check(good)) == "stale-payout-distribution"

    _run(body)


def test_expired_foreign_reused_and_allocated_tokens_are_rejected() -> None:
    async def body(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        good = build_set_custom_mining_job(job, channel_id=4, request_id=1)
        checker = CustomJobChecker(srv)
        code = "invalid-mining-job-token"
        unknown = replace(good, mining_job_token=bytes(16))
        assert checker.check(unknown) == SetCustomMiningJobError(4, 1, code)
        # Another user's channel cannot commit the pool to miner-1's job.
        assert checker.check(good, user_identity="miner-2") == SetCustomMiningJobError(4, 1, code)
        # A token from AllocateMiningJobToken names no validated job.
        async with client_for(srv) as c:
            alloc = await c.allocate_token()
        alloc_msg = replace(good, mining_job_token=alloc.mining_job_token)
        assert checker.check(alloc_msg) == SetCustomMiningJobError(4, 1, code)
        # Single use: the first commitment spends the token.
        assert isinstance(checker.check(good, user_identity="miner-1"), SetCustomMiningJobSuccess)
        assert checker.check(good) == SetCustomMiningJobError(4, 1, code)
        assert checker.stats[code] == 4 and checker.stats["accepted"] == 1

    _run(body)


def test_expired_token_and_closed_connection_are_rejected() -> None:
    code = "invalid-mining-job-token"

    async def body(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        good = build_set_custom_mining_job(job, channel_id=4, request_id=1)
        now[0] += 599.0  # just inside the JDS's token lifetime (600 s)
        assert _passes(srv, good, now[0])
        now[0] += 1.0
        assert CustomJobChecker(srv).check(good) == SetCustomMiningJobError(4, 1, code)

    async def gone(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        # A fresh token whose JD connection closed: the JDS forgot it.
        assert srv.declared_job(job.token) is None
        good = build_set_custom_mining_job(job, channel_id=4, request_id=2)
        assert CustomJobChecker(srv).check(good) == SetCustomMiningJobError(4, 2, code)

    _run(body)

    async def fresh(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        assert srv.declared_job(job.token) is not None

    _run(fresh, after_disconnect=gone)


def test_version_is_the_declared_one_up_to_the_bip323_bits() -> None:
    """§5.3.18: the BIP323 general-purpose bits (5-28) of ``version`` are the miner's; every
    other bit must be the one ``DeclareMiningJob.version`` declared (recorded by the JDS)."""
    declared_version = 0x20000004  # versionbits with a BIP9 signal on bit 2

    async def body(
        chain: KernelChain, srv: JobDeclarationServer, job: DeclaredJob, now: Clock
    ) -> None:
        declared = srv.declared_job(job.token)
        assert declared is not None and declared.version == declared_version
        good = build_set_custom_mining_job(job, channel_id=1, request_id=5)
        assert good.version == declared_version
        rolled = [
            good.version ^ 0x1FFFE000,  # the whole BIP320 mask (what ASICs roll)
            good.version | 0x00002000,  # one BIP320 bit
            good.version ^ 0x00000020,  # bit 5: BIP323, outside BIP320
            good.version ^ 0x1FFFFFE0,  # the whole BIP323 mask
        ]
        for v in rolled:
            assert _passes(srv, replace(good, version=v), now[0]), hex(v)
        checker = CustomJobChecker(srv)
        # The declared signal bit dropped: one field, rejected, nothing spent.
        unsignalled = replace(good, version=0x20000000)
        assert _error(checker.check(unsignalled)) == "invalid-job-param-value-version"
        # A rolled version is what the pool commits to.
        reply = checker.check(replace(good, version=good.version ^ 0x0001E000))
        assert isinstance(reply, SetCustomMiningJobSuccess)

    _run(body, version=declared_version)
