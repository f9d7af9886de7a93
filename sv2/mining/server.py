"""The asyncio Mining Protocol server (sv2-spec 05-Mining-Protocol.md): it only drives.

Sockets, Noise NX, handshake and setup deadlines and the per-address limits are the shared
:class:`~sv2.listener.NoiseListener`'s (the JD server's and the Template Provider's base). Each
connection is a sans-I/O :class:`~sv2.mining.session.MiningSession`; this module feeds it, acts
on its outputs and runs the timers:

- :class:`~sv2.mining.events.AcceptedShare`: queued; the queue is handed to ``on_shares``
  (durable before it returns: ``payouts serve`` writes it to the store) every ``batch_size``
  shares or ``flush_interval`` seconds, and only then is each channel's batch acknowledged with
  one ``SubmitShares.Success`` (§5.3.13: ``new_submits_accepted_count``, ``new_shares_sum``).
  If ``on_shares`` fails, every share of the batch gets ``SubmitShares.Error`` instead;
- :class:`~sv2.mining.events.BlockCandidate`: the block is rebuilt and submitted through the
  node; accepted -- or answered ``duplicate``/``inconclusive`` for a block the node's active
  chain already holds (the JD server's PushSolution may have submitted it first) -- it is a
  :class:`~sv2.declared_job.FoundBlock` for ``on_block``, exactly as the JD server reports one,
  so whichever path reports a block first records it and the other is a no-op there;
- the chain tip is polled (``tip_interval``) so shares on an old tip are ``stale-share``, and
  vardiff retargets idle channels (:meth:`MiningSession.tick`).

The JD server's state comes in as the :class:`~sv2.custom_job.DeclaredJobs` it satisfies; no
role's package is imported here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from payouts.node.interface import BlockTemplate, ChainTip, NodeError
from payouts.tx.hashes import display_hex
from payouts.tx.transaction import Tx
from sv2.connection import Sv2Connection
from sv2.custom_job import DeclaredJobs
from sv2.declared_job import FoundBlock
from sv2.listener import Disconnect, ListenerLimits, NoiseListener, Peer
from sv2.messages.base import Message
from sv2.messages.mining import SubmitSharesError, SubmitSharesSuccess
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS
from sv2.mining.events import AcceptedShare, BlockCandidate
from sv2.mining.pool_job import POOL_TAG, build_pool_job
from sv2.mining.session import MiningSession, Output
from sv2.mining.shared import MiningPolicy, MiningShared
from sv2.noise import ServerIdentity
from sv2.session import Close

log = logging.getLogger(__name__)

class MiningNode(Protocol):
    """What the server asks of the node (:class:`~payouts.node.interface.Node` has it)."""

    async def tip(self) -> ChainTip: ...

    async def block_template(self) -> BlockTemplate: ...

    async def submit_block(self, raw_block: bytes) -> str | None: ...

    async def block_hash(self, height: int) -> bytes | None: ...

    async def get_block(self, block_hash: bytes) -> bytes | None: ...


OnShares = Callable[[Sequence[AcceptedShare]], Awaitable[None]]
OnBlock = Callable[[FoundBlock], Awaitable[None] | None]
SHARE_NOT_RECORDED = "internal-error"  # SubmitShares.Error when the batch could not be stored
FOUND_ANSWERS = ("duplicate", "inconclusive", "duplicate-inconclusive")


@dataclass(slots=True)
class _Miner(Peer):
    session: MiningSession = field(kw_only=True)


class MiningServer(NoiseListener[_Miner]):
    """The pool's Mining Protocol endpoint (module docstring)."""

    name = "MP"
    log = logging.getLogger(__name__)

    def __init__(
        self,
        *,
        identity: ServerIdentity | Callable[[], ServerIdentity],
        node: MiningNode,
        policy: MiningPolicy,
        known_user: Callable[[str], bool],
        on_shares: OnShares,
        jds: DeclaredJobs | None = None,
        on_block: OnBlock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ListenerLimits | None = None,
        batch_size: int = 10_000,
        flush_interval: float = 0.2,
        tip_interval: float = 1.0,
        template_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        pool_tag: bytes = POOL_TAG,
        watch_attempts: int = 30,
        watch_interval: float = 1.0,
    ) -> None:
        super().__init__(
            host=host, port=port, limits=limits or ListenerLimits(idle_timeout=600.0)
        )
        self._identity_of = identity if callable(identity) else (lambda: identity)
        self.node = node
        self.shared = MiningShared(
            policy=policy,
            known_user=known_user,
            jds=jds,
            supported_extensions=(EXT_NON_CUSTODIAL_PAYOUTS,) if jds is not None else (),
            clock=clock,
            stats=self.stats,
        )
        self.on_shares = on_shares
        self.on_block = on_block
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.tip_interval = tip_interval
        self.found_blocks: list[FoundBlock] = []
        self.template_interval = template_interval
        # In the pool job's coinbase scriptSig: servers of one pool give out the same
        # extranonce prefixes, so each needs its own tag or their miners would hash the same
        # headers (a cluster's frontends pass their JD server's token tag).
        self.pool_tag = pool_tag
        self.watch_attempts, self.watch_interval = watch_attempts, watch_interval
        self._pool_job_key: tuple[bytes, int, int] | None = None
        # One rebuild at a time: the tip poll, a block found here and a new distribution
        # each start one, and an older template must not land after a newer one.
        self._pool_job_lock = asyncio.Lock()
        # Distributions a found block paid (told by the composition root): no pool job is built
        # on one again, it waits for the next distribution (sv2-spec PR #203 §10).
        self._paid: OrderedDict[int, None] = OrderedDict()
        self._template_at = 0.0
        self._queue: list[AcceptedShare] = []
        self._flush_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self.shared.set_tip((await self.node.tip()).block_hash)
        except NodeError as exc:
            log.warning("MP: node tip unknown at start: %s", exc.reason)
        try:
            await self.refresh_pool_job()
        except NodeError as exc:
            log.warning("MP: no pool job at start: %s", exc.reason)
        await self._listen()
        self._spawn(self._flush_loop())
        if self.tip_interval > 0:
            self._spawn(self._tip_loop())
        self._spawn(self._vardiff_loop())

    async def stop(self) -> None:
        await self.flush()
        await super().stop()

    async def __aenter__(self) -> MiningServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def channels(self) -> int:
        """Open channels on every connection."""
        return sum(len(p.session.channels) for p in self._peers.values())

    # -- timers ---------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def _tip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tip_interval)
            try:
                await self.refresh_tip()
            except NodeError as exc:
                self._count("tip-errors")
                log.warning("MP: node error while polling the tip: %s", exc.reason)

    async def refresh_tip(self) -> None:
        """Poll the tip; on a new one, a new pool job at once (the old one's shares are
        stale); otherwise a fresh template every ``template_interval``."""
        moved = self.shared.set_tip((await self.node.tip()).block_hash)
        now = self.shared.clock()
        if moved or now - self._template_at >= self.template_interval:
            await self.refresh_pool_job()

    async def refresh_pool_job(self) -> None:
        """Build the pool's job from the node's template and the JD server's current
        distribution, and send it to every channel that mines pool jobs, if the tip, the
        template revenue or the distribution changed (:mod:`sv2.mining.pool_job`)."""
        async with self._pool_job_lock:
            await self._refresh_pool_job()

    async def _refresh_pool_job(self) -> None:
        self._template_at = self.shared.clock()
        jds = self.shared.jds
        published = jds.book.current if jds is not None else None
        if published is None:
            return  # no distribution to pay: no pool jobs (custom jobs still work)
        if published.distribution_id in self._paid:
            return  # settled: the next job waits for the distribution that follows
        bt = await self.node.block_template()
        key = (bt.prev_hash, bt.coinbase_value, published.distribution_id)
        if key == self._pool_job_key:
            return
        pol = self.shared.policy
        size = pol.extranonce_prefix_size + pol.extranonce_size
        job = await asyncio.to_thread(build_pool_job, bt, published, extranonce_size=size,
                                      tag=self.pool_tag)
        self.shared.set_tip(bt.prev_hash)
        self.shared.pool_job, self.shared.pool_job_time = job, bt.curtime
        self._pool_job_key = key
        self._count("pool-jobs")
        for p in list(self._peers.values()):
            if p.session.setup and not p.closing:
                outs = p.session.pool_job_update()
                self._deliver(p, [m for m in outs if isinstance(m, Message)])

    async def _next_pool_job(self, why: str = "after the block") -> None:
        """After a block found here (or a new distribution): the next pool job now, not at
        the next poll."""
        try:
            await self.refresh_pool_job()
        except NodeError as exc:
            log.warning("MP: no pool job %s: %s", why, exc.reason)

    def distribution_paid(self, distribution_id: int) -> None:
        """A block paying ``distribution_id`` was found (here, or by the JD server beside this
        one): no pool job is built on it from now on, so miners that do not declare never mine
        a settled distribution while the next one is on its way; the current pool job stays,
        on the old tip, where its shares are stale."""
        self._paid[distribution_id] = None
        while len(self._paid) > 64:
            self._paid.popitem(last=False)

    def pool_job_soon(self) -> None:
        """The JD server's current distribution changed: rebuild the pool job on it now
        (from the event loop's thread), so miners that do not declare mine the newest one."""
        self._spawn(self._next_pool_job("for the new distribution"))

    async def _vardiff_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.shared.policy.retarget_interval / 4))
            for p in list(self._peers.values()):
                self._deliver(p, p.session.tick())

    def _deliver(self, p: _Miner, outputs: list[Message]) -> None:
        try:
            for m in outputs:
                self._write(p, m)
        except Disconnect as exc:
            self._close_from_outside(p.id, exc.reason)

    # -- shares ---------------------------------------------------------------------------------

    async def flush(self, at_least: int = 1) -> None:
        """Hand the queued shares to ``on_shares``, then acknowledge them (module docstring).

        ``at_least``: flush only if that many shares are still queued once the previous
        batch is written. Connections that each saw a full queue while a batch was being
        written all wait here; the first takes the queue, and the others, finding less than a
        batch left, return instead of writing a few shares each (a durable write costs a
        commit whatever its size)."""
        async with self._flush_lock:
            if len(self._queue) < at_least:
                return
            batch, self._queue = self._queue, []
            try:
                await self.on_shares(batch)
            except Exception:
                log.exception("MP: %d shares could not be recorded", len(batch))
                self._count("shares-not-recorded")
                replies: dict[int, list[Message]] = {}
                for a in batch:
                    replies.setdefault(a.connection_id, []).append(
                        SubmitSharesError(a.channel_id, a.sequence_number, SHARE_NOT_RECORDED)
                    )
            else:
                self.stats["shares-recorded"] = self.stats.get("shares-recorded", 0) + len(batch)
                replies = _acknowledgements(batch)
            for pid, msgs in replies.items():
                p = self._peers.get(pid)
                if p is not None:
                    self._deliver(p, msgs)

    # -- blocks ---------------------------------------------------------------------------------

    async def _block(self, cand: BlockCandidate) -> None:
        job = cand.job
        if job.merkle_path != job.parts.merkle_path:
            # A Coinbase-only job on transactions this pool does not hold (sv2.coinbase_only):
            # the block cannot be rebuilt here; the JD client propagates it (sv2-spec §6.1,
            # its Template Provider's SubmitSolution), and it is recorded once the node has it.
            self._spawn(self._watch_block(cand))
            return
        block = job.block(cand.extranonce, cand.version, cand.ntime, cand.nonce)
        raw = block.serialize()
        try:
            reason = await self.node.submit_block(raw)
        except NodeError as exc:
            reason = f"node error: {exc.reason}"
        if reason in FOUND_ANSWERS:
            # Already known: found if the active chain holds it (another path submitted it).
            try:
                if await self.node.block_hash(job.declared.height) == block.block_hash:
                    reason = None
            except NodeError:
                pass
        if reason is not None:
            self._count("blocks-rejected")
            log.warning("MP: block %s rejected: %s", display_hex(block.block_hash), reason)
            return
        await self._found(FoundBlock(block.block_hash, job.declared.height, raw, block.coinbase,
                                     job.declared))

    async def _watch_block(self, cand: BlockCandidate) -> None:
        """Record a block this pool could not rebuild once the node's active chain holds it
        (looked for ``watch_attempts`` times, ``watch_interval`` s apart); its coinbase is the
        job's with the share's extranonce, its raw bytes the node's."""
        job, h = cand.job, cand.share_hash
        self._count("blocks-watched")
        for attempt in range(self.watch_attempts):
            if attempt:
                await asyncio.sleep(self.watch_interval)
            try:
                if await self.node.block_hash(job.declared.height) != h:
                    continue
                raw = await self.node.get_block(h) or b""
            except NodeError:
                continue
            coinbase = Tx.parse(job.declared.coinbase.with_extranonce(
                job.extranonce_prefix + cand.extranonce))
            await self._found(FoundBlock(h, job.declared.height, raw, coinbase, job.declared))
            return
        self._count("blocks-not-seen")
        log.warning("MP: block %s (a Coinbase-only job) never reached the node's active chain",
                    display_hex(h))

    async def _found(self, found: FoundBlock) -> None:
        """A block the node holds: the next pool job, then ``on_block`` (recorded once)."""
        self._count("blocks-found")
        self.shared.set_tip(found.block_hash)
        self._spawn(self._next_pool_job())
        self.found_blocks.append(found)
        log.info("MP: block %s found by a share at height %d", display_hex(found.block_hash),
                 found.height)
        if self.on_block is not None:
            try:
                res = self.on_block(found)
                if inspect.isawaitable(res):
                    await res
            except Exception:  # the settlement layer's failure must not drop the miner
                log.exception("MP: on_block failed")

    # -- connections ----------------------------------------------------------------------------

    def _identity(self) -> ServerIdentity:
        return self._identity_of()

    def _new_peer(
        self, peer_id: int, conn: Sv2Connection, writer: asyncio.StreamWriter, peer: str
    ) -> _Miner:
        return _Miner(peer_id, conn, writer, peer, session=MiningSession(peer_id, self.shared))

    def _peer_closed(self, p: _Miner) -> None:
        p.session.closed()

    def _is_set_up(self, p: _Miner, items: list[Any]) -> bool:
        return p.session.setup and not p.closing

    async def _handle_items(self, p: _Miner, items: list[Any]) -> None:
        for it in items:
            if p.closing:
                return
            await self._emit(p, p.session.receive(it))
        if len(self._queue) >= self.batch_size:
            await self.flush(self.batch_size)

    async def _emit(self, p: _Miner, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, AcceptedShare):
                self._queue.append(out)
            elif isinstance(out, BlockCandidate):
                await self._block(out)
            elif isinstance(out, Message | Close):
                self._output(p, out)


def _acknowledgements(batch: Sequence[AcceptedShare]) -> dict[int, list[Message]]:
    """One SubmitShares.Success per channel of the batch (§5.3.13)."""
    acks: dict[tuple[int, int], list[int]] = {}
    for a in batch:
        k = (a.connection_id, a.channel_id)
        acc = acks.setdefault(k, [0, 0, 0])
        acc[0] = a.sequence_number
        acc[1] += 1
        acc[2] += a.difficulty
    out: dict[int, list[Message]] = {}
    for (pid, cid), (seq, n, total) in acks.items():
        out.setdefault(pid, []).append(
            SubmitSharesSuccess(cid, seq, n, min(total, (1 << 64) - 1))
        )
    return out


__all__ = ["MiningServer", "OnBlock", "OnShares"]
