"""A JD server with a job a JD client declared over TCP + Noise, and a miner that finds shares
from the Mining Protocol messages alone (not from the server's own job objects)."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from payouts.node.kernel_chain import KernelChain
from sv2.jdc import DeclaredJob
from sv2.jds import JobDeclarationServer
from sv2.mining.shared import MiningPolicy, MiningShared
from sv2.mining.targets import REGTEST_POW_LIMIT
from tests.jdc.helpers import ChainNode, fee_tx, make_distribution, setup_chain, start_server
from tests.jdc.test_client_e2e import client_for

USER = "miner-1"
Body = Callable[[KernelChain, JobDeclarationServer, DeclaredJob, list[float]], Awaitable[None]]


def run_with_declared_job(body: Body, *, user: str = USER) -> None:
    """``body`` runs while the JD connection that declared the job is open (the JDS drops a
    connection's tokens when it closes)."""

    async def main() -> None:
        with KernelChain() as chain:
            setup_chain(chain)
            now = [1_000.0]
            srv_node, cli_node = ChainNode(chain), ChainNode(chain)
            tx = fee_tx(chain, 1, 1_500)
            srv_node.add_mempool(tx)
            cli_node.add_mempool(tx)
            srv = await start_server(srv_node, make_distribution(1), clock=lambda: now[0])
            try:
                async with client_for(srv, user_identifier=user) as c:
                    from sv2.jdc import JobTemplate

                    template = JobTemplate.from_block_template(await cli_node.block_template())
                    job = await c.declare_job(template)
                    await body(chain, srv, job, now)
            finally:
                await srv.stop()

    asyncio.run(main())


def shared_for(srv: JobDeclarationServer | None, **policy: object) -> MiningShared:
    pol = MiningPolicy(difficulty_unit=REGTEST_POW_LIMIT, **policy)  # type: ignore[arg-type]
    return MiningShared(
        policy=pol,
        known_user=lambda u: u in {USER, "miner-2"},
        jds=srv,
        supported_extensions=(0x0003,),
        clock=lambda: 0.0,
        wall_clock=lambda: 1_700_000_000.0,
    )


def sha256d(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


@dataclass(frozen=True)
class MinerJob:
    """What a miner knows of a job: the stripped coinbase halves around the full extranonce
    (channel prefix + its own), the merkle path, the header fields."""

    head: bytes
    tail: bytes
    merkle_path: tuple[bytes, ...]
    version: int
    prev_hash: bytes
    bits: int

    def header(self, extranonce: bytes, version: int, ntime: int, nonce: int) -> bytes:
        h = sha256d(self.head + extranonce + self.tail)
        for sib in self.merkle_path:
            h = sha256d(h + sib)
        return struct.pack("<I32s32sIII", version, self.prev_hash, h, ntime, self.bits, nonce)

    def find(
        self, extranonce: bytes, ntime: int, pred: Callable[[int], bool], *, start: int = 0,
        version: int | None = None,
    ) -> tuple[int, bytes]:
        """The first nonce from ``start`` whose hash value satisfies ``pred``."""
        v = self.version if version is None else version
        for nonce in range(start, start + 1_000_000):
            h = sha256d(self.header(extranonce, v, ntime, nonce))
            if pred(int.from_bytes(h, "little")):
                return nonce, h
        raise AssertionError("no nonce found")


def miner_job_of(job: DeclaredJob) -> MinerJob:
    """From the JD client's declared job: its coinbase parts (stripped), the template."""
    parts = job.coinbase.parts
    t = job.template
    return MinerJob(parts.stripped_prefix, parts.stripped_suffix, tuple(t.merkle_path()),
                    t.version & 0xFFFFFFFF, t.prev_hash, t.bits)
