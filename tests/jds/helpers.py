"""Test fixtures for the JD server: a Node backed by libbitcoinkernel (KernelChain), a minimal
JD client over real TCP + Noise using :mod:`sv2.connection`, declaration builders, and a rig
that drives a sans-I/O :class:`~sv2.jds.session.JdsSession` without a socket."""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.interface import BlockTemplate, ChainTip, NodeError, TemplateTx
from payouts.node.kernel_chain import REGTEST_BITS, BlockRejectedError, KernelChain
from payouts.node.submit import submit_found_block
from payouts.settlement.coinbase import build_coinbase_settlement
from payouts.settlement.modes import CTV_DEPLOYMENT, SettlementMode, default_expected_outputs
from payouts.tx.block import Block, BlockHeader, check_pow, difficulty_from_bits
from payouts.tx.coinbase import (
    HALVING_INTERVAL_REGTEST,
    witness_commitment,
    witness_commitment_output,
)
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.authority import authority_public_key
from sv2.connection import HandshakeComplete, Sv2Connection
from sv2.distribution_book import DistributionBook, Published
from sv2.jds import JdsLimits, JobDeclarationServer
from sv2.jds.session import JdsSession, JdsShared
from sv2.jds.state import TxStore
from sv2.jds.steps import (
    NeedMempoolTxs,
    NeedTemplate,
    NeedTip,
    NodeRequest,
    Output,
    SubmitBlock,
    run_step,
)
from sv2.jds.tokens import TokenBook
from sv2.messages import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJob,
    DistributionIdTlv,
    PushSolution,
    RequestExtensions,
    RequestExtensionsSuccess,
    SetupConnection,
    SetupConnectionSuccess,
)
from sv2.messages.base import Message
from sv2.noise import ServerIdentity

OP_TRUE_WSH = b"\x00\x20" + hashlib.sha256(b"\x51").digest()  # P2WSH(OP_TRUE): spendable here
AUTHORITY_SK = bytes.fromhex("11" * 32)
AUTHORITY_PK = authority_public_key(AUTHORITY_SK)
IDENTITY = ServerIdentity.signed_by(AUTHORITY_SK, validity_s=86400)

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def p2wpkh(i: int) -> bytes:
    return b"\x00\x14" + hashlib.sha256(i.to_bytes(4, "little")).digest()[:20]


def p2tr(i: int) -> bytes:
    return b"\x51\x20" + hashlib.sha256(b"tr" + i.to_bytes(4, "little")).digest()


POOL_SCRIPT = p2wpkh(999_999)


def make_distribution(dist_id: int = 1, payees: int = 5, pool_weight: int = 100) -> Distribution:
    return Distribution(
        distribution_id=dist_id,
        pool_payout=PoolPayout(POOL_SCRIPT, pool_weight),
        payouts=tuple(
            Payee(p2wpkh(i) if i % 2 else p2tr(i), 1_000 + 37 * i, 330) for i in range(payees)
        ),
    )


# -- a Node on KernelChain --------------------------------------------------------------------


class KernelTestNode:
    """The :class:`payouts.node.interface.Node` surface the JDS and the JDC use, on a
    KernelChain that several of them may share (each with its own mempool: what a JDC knows and
    its JDS does not)."""

    network = "regtest"

    def __init__(self, chain: KernelChain) -> None:
        self.chain = chain
        self.mempool: dict[bytes, tuple[Tx, int]] = {}  # wtxid -> (tx, fee)
        self.submitted: list[bytes] = []
        self.template_calls = 0

    def add_mempool(self, tx: Tx) -> None:
        self.mempool[tx.wtxid] = (tx, self.chain.fees([tx]))

    async def tip(self) -> ChainTip:
        c = self.chain
        times = c.times
        return ChainTip(
            c.tip_height,
            c.tip_hash,
            REGTEST_BITS,
            times[-1],
            sorted(times[-11:])[len(times[-11:]) // 2],
        )

    async def block_template(self) -> BlockTemplate:
        self.template_calls += 1
        tip = await self.tip()
        txs = tuple(
            TemplateTx(tx, fee, 4 * tx.legacy_sigops()) for tx, fee in self.mempool.values()
        )
        return BlockTemplate(
            0x20000000,
            tip.block_hash,
            tip.height + 1,
            REGTEST_BITS,
            max(self.chain.times[-11:]) + 1,  # strictly above the median time past
            self.chain.subsidy(tip.height + 1) + sum(t.fee for t in txs),
            txs,
        )

    async def submit_block(self, raw_block: bytes) -> str | None:
        self.submitted.append(raw_block)
        block = Block.parse(raw_block)
        try:
            self.chain.submit(block)
        except BlockRejectedError as exc:
            return exc.reason
        for tx in block.txs[1:]:
            self.mempool.pop(tx.wtxid, None)
        return None

    async def mempool_txs(self, wtxids: Sequence[bytes]) -> list[Tx | None]:
        return [self.mempool[w][0] if w in self.mempool else None for w in wtxids]

    async def send_raw_transaction(self, raw_tx: bytes) -> bytes:
        tx = Tx.parse(raw_tx)
        self.add_mempool(tx)
        return tx.txid

    async def deployment_active(self, name: str) -> bool:
        """Nothing is reported active, above all not CTV (the kernel has no BIP-119 flag), so
        a ctv-mode JDS or JDC refuses to run on it, as on
        :class:`~payouts.node.kernel.KernelNode`."""
        return False

    async def network_difficulty(self) -> Fraction:
        return difficulty_from_bits(0x207FFFFF)


class CtvClaimingKernelNode(KernelTestNode):
    """A :class:`KernelTestNode` that CLAIMS ``checktemplateverify`` is active, for tests of
    the ctv mode's codec and declaration validation only.

    The kernel does NOT enforce CTV: libbitcoinkernel has no BIP-119 flag, OP_CTV runs as
    OP_NOP4, so a block it accepts shows the block is valid, not that a fan-out spend would be
    held to its template. Tests of CTV enforcement itself run on Bitcoin Inquisition
    (tests/node/test_ctv_inquisition.py)."""

    async def deployment_active(self, name: str) -> bool:
        return name == CTV_DEPLOYMENT or await super().deployment_active(name)


def spend_coinbase(chain: KernelChain, height: int, outputs: Sequence[TxOut]) -> Tx:
    """Spend the P2WSH(OP_TRUE) coinbase output of block ``height`` (mined by ``setup_chain``)."""
    cb = chain.blocks[height - 1].txs[0]
    txin = TxIn(OutPoint(cb.txid, 0), b"", 0xFFFFFFFD, (b"\x51",))
    return Tx(2, (txin,), tuple(outputs), 0)


def setup_chain(chain: KernelChain) -> None:
    chain.mine_empty(101, OP_TRUE_WSH)


def fee_tx(chain: KernelChain, height: int, fee: int = 1_000, n_out: int = 1) -> Tx:
    value = chain.subsidy(height) - fee
    outs = [
        TxOut(value // n_out + (value % n_out if i == 0 else 0), OP_TRUE_WSH) for i in range(n_out)
    ]
    return spend_coinbase(chain, height, outs)


# -- the client -------------------------------------------------------------------------------


class JdClient:
    """Minimal JD client over TCP + Noise (tests only)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = Sv2Connection.client(AUTHORITY_PK)
        self.inbox: list[Any] = []

    @classmethod
    async def connect(cls, addr: tuple[str, int]) -> JdClient:
        reader, writer = await asyncio.open_connection(*addr)
        c = cls(reader, writer)
        writer.write(c.conn.initiate())
        while not any(isinstance(i, HandshakeComplete) for i in c.inbox):
            await c._read()
        c.inbox = [i for i in c.inbox if not isinstance(i, HandshakeComplete)]
        return c

    async def _read(self, timeout: float = 5.0) -> None:
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        if not data:
            raise ConnectionResetError("server closed the connection")
        self.inbox.extend(self.conn.receive_data(data))

    def send(self, msg: Message) -> None:
        self.writer.write(self.conn.send(msg))

    async def recv(self, timeout: float = 5.0) -> Any:
        while not self.inbox:
            await self._read(timeout)
        return self.inbox.pop(0)

    async def expect(self, cls: type[M], timeout: float = 5.0) -> M:
        msg = await self.recv(timeout)
        assert isinstance(msg, cls), f"expected {cls.__name__}, got {msg!r}"
        return msg

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server closes the connection (messages before that are kept)."""
        try:
            while True:
                await self._read(timeout)
        except (ConnectionResetError, ConnectionError):
            return True

    async def setup(
        self, flags: int = 1, extensions: Sequence[int] | None = (0x0003, 0x4003)
    ) -> None:
        from sv2.messages import RequestExtensionsSuccess, SetupConnectionSuccess

        self.send(SetupConnection(1, 2, 2, flags, "127.0.0.1", 0, "tests", "", "", ""))
        await self.expect(SetupConnectionSuccess)
        if extensions is not None:
            self.send(RequestExtensions(1, tuple(extensions)))
            await self.expect(RequestExtensionsSuccess)

    async def token(self, request_id: int = 1) -> AllocateMiningJobTokenSuccess:
        self.send(AllocateMiningJobToken("miner", request_id))
        return await self.expect(AllocateMiningJobTokenSuccess)

    def close(self) -> None:
        self.writer.close()


# -- declarations -----------------------------------------------------------------------------


@dataclass
class Declaration:
    prefix: bytes
    suffix: bytes
    wtxids: tuple[bytes, ...]
    txs: tuple[Tx, ...]
    height: int
    revenue: int
    extranonce_size: int = 8
    outputs: tuple[TxOut, ...] = field(default=())

    def message(
        self, token: bytes, request_id: int = 7, dist_id: int | None = 1
    ) -> DeclareMiningJob:
        tlvs = (DistributionIdTlv(dist_id),) if dist_id is not None else ()
        return DeclareMiningJob(
            request_id, token, 0x20000000, self.prefix, self.suffix, self.wtxids, b"", tlvs=tlvs
        )


def build_declaration(
    dist: Distribution,
    chain: KernelChain,
    txs: Sequence[Tx] = (),
    fees: int = 0,
    *,
    revenue: int | None = None,
    height: int | None = None,
    payout_outputs: Sequence[TxOut] | None = None,
) -> Declaration:
    """The coinbase a correct JDC builds: build_coinbase_settlement at T = subsidy + fees."""
    h = chain.tip_height + 1 if height is None else height
    t = chain.subsidy(chain.tip_height + 1) + fees if revenue is None else revenue
    commitment = witness_commitment([tx.wtxid for tx in txs])
    if payout_outputs is None:
        st = build_coinbase_settlement(
            dist,
            t,
            height=h,
            template_outputs=(witness_commitment_output(commitment),),
            tag=b"/jds-test/",
        )
        parts, outs = st.parts, st.outputs
    else:
        from payouts.tx.coinbase import build_coinbase_parts

        parts = build_coinbase_parts(
            h, list(payout_outputs), extranonce_size=8, tag=b"/jds-test/", commitment=commitment
        )
        outs = (*payout_outputs, witness_commitment_output(commitment))
    return Declaration(
        parts.prefix, parts.suffix, tuple(tx.wtxid for tx in txs), tuple(txs), h, t, 8, tuple(outs)
    )


def solve_push(
    decl: Declaration,
    prev_hash: bytes,
    ntime: int,
    extranonce: bytes | None = None,
    version: int = 0x20000000,
) -> PushSolution:
    """What the miner finds: grind a nonce for the declared job (regtest target), with the
    header ``version`` (the declared 0x20000000 unless a test rolls or breaks it)."""
    en = extranonce if extranonce is not None else os.urandom(decl.extranonce_size)
    cb = Tx.parse(decl.prefix + en + decl.suffix)
    root = merkle_root([cb.txid, *(t.txid for t in decl.txs)])
    for nonce in range(1 << 20):
        h = BlockHeader(version, prev_hash, root, ntime, REGTEST_BITS, nonce)
        if check_pow(h.hash, REGTEST_BITS):
            return PushSolution(en, prev_hash, nonce, ntime, REGTEST_BITS, version)
    raise AssertionError("no nonce")


async def set_up_client(srv: JobDeclarationServer) -> JdClient:
    """A client through SetupConnection and 0x0003/0x4003, the distribution and mode read."""
    from sv2.messages import SetPayoutDistribution, SetSettlementMode

    c = await JdClient.connect(srv.address)
    await c.setup()
    await c.expect(SetPayoutDistribution)
    await c.expect(SetSettlementMode)
    return c


async def wait_until(cond: Callable[[], bool], timeout: float = 4.0) -> None:
    """Poll ``cond`` every 10 ms (server-side effects land asynchronously)."""
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def start_server(
    node: KernelTestNode, dist: Distribution | None = None, **kw: Any
) -> JobDeclarationServer:
    kw.setdefault("limits", JdsLimits(handshake_timeout=2.0, idle_timeout=10.0))
    srv = JobDeclarationServer(
        identity=IDENTITY,
        node=node,  # type: ignore[arg-type]
        distribution_source=dist or make_distribution(),
        supported_extensions=kw.pop("supported_extensions", (0x0003, 0x4002, 0x4003)),
        **kw,
    )
    await srv.start()
    return srv


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else statistics.fmean(xs)


# -- a JdsSession without a socket ------------------------------------------------------------

SESSION_SETUP = SetupConnection(1, 2, 2, 1, "127.0.0.1", 0, "tests", "", "", "")
ALL_EXTENSIONS = (0x0003, 0x4002, 0x4003)


def completed(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (KernelTestNode's methods), without an
    event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise AssertionError("the test node suspended")


@dataclass
class Rig:
    """A session on shared server state, with a kernel-backed node answering its requests."""

    chain: KernelChain
    node: KernelTestNode
    shared: JdsShared
    session: JdsSession
    now: list[float]
    requests: list[NodeRequest] = field(default_factory=list)
    fail: set[type[Any]] = field(default_factory=set)  # requests the node fails

    def answer(self, req: NodeRequest) -> Any:
        self.requests.append(req)
        if type(req) in self.fail:
            return NodeError("node down")
        if isinstance(req, NeedTip):
            return completed(self.node.tip())
        if isinstance(req, NeedTemplate):
            bt = completed(self.node.block_template())
            self.shared.txs.add_template(bt, self.now[0])
            return None
        if isinstance(req, NeedMempoolTxs):
            return completed(self.node.mempool_txs(list(req.wtxids)))
        assert isinstance(req, SubmitBlock)
        return completed(submit_found_block(self.node, req.raw_block, req.block_hash))

    def send(self, msg: Message) -> list[Output]:
        self.requests.clear()
        return run_step(self.session.receive(msg), self.answer)

    def one(self, msg: Message, cls: type[M]) -> M:
        [out] = self.send(msg)
        assert isinstance(out, cls), out
        return out

    def set_up(self, extensions: tuple[int, ...] | None = (0x0003, 0x4003)) -> None:
        assert isinstance(self.send(SESSION_SETUP)[0], SetupConnectionSuccess)
        if extensions is not None:
            out = self.send(RequestExtensions(1, extensions))
            assert isinstance(out[0], RequestExtensionsSuccess), out

    def token(self, request_id: int = 1) -> bytes:
        return self.one(
            AllocateMiningJobToken("miner", request_id), AllocateMiningJobTokenSuccess
        ).mining_job_token

    def declare(self, decl: Declaration, dist_id: int | None = 1) -> list[Output]:
        return self.send(decl.message(self.token(), dist_id=dist_id))


def new_shared(
    dist: Distribution, now: list[float], *, required: tuple[int, ...] = ()
) -> JdsShared:
    book = DistributionBook(10.0)
    book.publish(Published(dist, None, SettlementMode(), now[0], False))
    return JdsShared(
        tokens=TokenBook(600.0),
        book=book,
        txs=TxStore(),
        expected=default_expected_outputs,
        supported=ALL_EXTENSIONS,
        required=required,
        clock=lambda: now[0],
        halving=HALVING_INTERVAL_REGTEST,
    )


@contextmanager
def rig(dist: Distribution | None = None, **kw: Any) -> Iterator[Rig]:
    with KernelChain() as chain:
        setup_chain(chain)
        now = [1_000.0]
        shared = new_shared(dist or make_distribution(), now, **kw)
        yield Rig(chain, KernelTestNode(chain), shared, JdsSession(1, shared), now)
