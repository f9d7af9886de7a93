"""The settlement lifecycle running inside ``payouts serve``.

:class:`SettlementRunner` drives one :class:`~payouts.settlement.lifecycle.SettlementLifecycle`
over a pool's store. It knows the pool only through :class:`SettledPool` (the engine, the
settings and the stored distributions); the composition root (:mod:`payouts.served`) hands it
every block the pool records and reads back what each step did:

- **tracking** (:meth:`SettlementRunner.track`): every recorded block (``PoolService.record_block``,
  for each block the JD server got accepted) is tracked in the pool's settlement mode, the one the
  JD server announced (extension 0x4003) and checked the coinbase against:

  * ``coinbase``: paid at maturity. The settlement row keeps the coinbase txid and the index of
    its first payout output, so the API can say where each payout landed;
  * ``ctv``: the fan-out tree is rebuilt exactly as both JD sides build it
    (:func:`~payouts.settlement.ctv.build_ctv_fanout` on the distribution and the revenue, with
    the mode's :class:`~payouts.settlement.ctv.CtvParams`), its commitment output looked up in
    the block's coinbase, the tree bound to that outpoint and persisted: from then on the txs
    (and a payee's exit path) are in the store, whatever the settings say later;
  * ``musig2``: the output is rebuilt from the mode's committee parameters
    (:meth:`payouts.settlement.modes.Musig2Mode.build`; ``[settlement.musig2]`` through
    :func:`~payouts.settlement.modes.mode_from_settings`), also after a restart
    (``musig2_resolver``); the signing sessions the lifecycle opens live in the store
    (:class:`~payouts.settlement.musig2.registry.SessionRegistry`) under the id
    ``block-<block id>``, so the API's MuSig2 endpoints of every process serve them, each
    change under the session's row lock.

  A coinbase that lacks the mode's outputs is logged and left untracked (never guessed).
- **polling**: a background task steps the lifecycle every ``[settlement] poll_interval_sec``
  (found → confirmed → mature → paid, reorgs), logging each event as one JSON line on the
  ``payouts.settlement.events`` logger. Every step is idempotent and all progress is in the
  store, so a restart resumes and never pays twice; cancelling the task (shutdown) between
  two store writes is safe for the same reason.
- **operator actions** (the API's ``POST /v1/settlements/{id}/broadcast`` and ``/fallback``):
  check their preconditions against the node first (a refused action runs no step and changes
  nothing), then run the same lifecycle step under the same lock as the poller and report the
  node's answer to each broadcast; the fallback aborts the block's signing session, which makes
  the lifecycle sign and send the timelocked script-path spend.

Safety: a node that does not know the newest block the store saw confirmed (not even as a stale
block) is not on the chain those blocks were recorded on — the embedded kernel node after a
restart (a new in-memory chain), a node still syncing: stepping would orphan them and reverse
their ledger lines, so the runner waits (logged once). A block reorged out of a node that saw
it is still known to that node, so real reorgs are handled as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Engine, update

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.fitting import FittedDistribution
from payouts.errors import PayoutsError, ValidationError
from payouts.node.interface import Node, NodeError
from payouts.settings import Settings
from payouts.settlement.ctv import build_ctv_fanout
from payouts.settlement.lifecycle import (
    FallbackSigner,
    LifecycleConfig,
    LifecycleEvent,
    SendResult,
    SettlementLifecycle,
    StepReport,
)
from payouts.settlement.lifecycle_fees import FeeWallet
from payouts.settlement.lifecycle_rules import (
    COINBASE_MATURITY,
    coinbase_spendable,
    first_mature_tip,
)
from payouts.settlement.lifecycle_store import (
    TxRow,
    bind_funding,
    load_settlements,
    load_txs,
)
from payouts.settlement.modes import SettlementMode, mode_from_settings
from payouts.settlement.musig2.output import Musig2Output
from payouts.settlement.musig2.registry import SessionRegistry, session_id
from payouts.settlement.musig2.session import SessionState, SigningSession
from payouts.settlement.musig2.spend import (
    FallbackSpend,
    open_signing_session,
    sign_fallback_spend,
)
from payouts.states import BlockStatus, SettlementPhase, TxRole
from payouts.store._common import write_connection
from payouts.store.ledger import BlockRecord, get_block, list_blocks
from payouts.store.settlement_models import Settlement
from payouts.tx.block import Block
from payouts.tx.hashes import display_hex
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut

log = logging.getLogger("payouts.settlement")
event_log = logging.getLogger("payouts.settlement.events")

#: Labels of the "settlements by state" gauge: the block statuses, with ``broadcasting`` for a
#: mature block whose payout txs are out but not all confirmed.
SETTLEMENT_STATES: tuple[str, ...] = (
    BlockStatus.FOUND, BlockStatus.CONFIRMED, BlockStatus.MATURE, SettlementPhase.BROADCASTING,
    BlockStatus.PAID, BlockStatus.ORPHANED)


class SettlementActionError(PayoutsError):
    """An operator action that cannot be done now (HTTP ``status``, 409 unless said); its
    keyword arguments are its :attr:`~payouts.errors.PayoutsError.context`."""

    def __init__(self, message: str, *, code: str, status: int = 409, **context: int | str) -> None:
        super().__init__(message, code=code, **context)
        self.status = status


class SettledPool(Protocol):
    """What the runner reads of the pool (a :class:`~payouts.service.PoolService` is one): the
    store, the settings, and the distribution a block was found on."""

    @property
    def engine(self) -> Engine: ...

    @property
    def settings(self) -> Settings: ...

    def distribution(self, distribution_id: int) -> FittedDistribution: ...


@dataclass(frozen=True, slots=True)
class ActionReport:
    """What an operator action did: the lifecycle events of that block, the node's answer to
    each broadcast (``sent``), and the block's txs afterwards."""

    block_id: int
    status: str
    phase: str
    events: tuple[LifecycleEvent, ...]
    sent: tuple[SendResult, ...]
    txs: tuple[TxRow, ...] = field(default=())


def fallback_signer_from_settings(settings: Settings) -> FallbackSigner | None:
    """A fallback signer holding ``[settlement.musig2] fallback_secret_key``, or None (then a
    failed session's fallback is signed elsewhere, by whoever holds the key)."""
    m = settings.settlement.musig2
    if m is None or m.fallback_secret_key is None:
        return None
    seckey = bytes.fromhex(m.fallback_secret_key)

    def sign(out: Musig2Output, spend: FallbackSpend, session: SigningSession) -> Tx:
        return sign_fallback_spend(out, spend, seckey, session=session)

    return sign


def settlement_states(engine: Engine) -> dict[str, int]:
    """Blocks per :data:`SETTLEMENT_STATES` label (every label present, 0 when none)."""
    phases = {b: s.phase for b, s in load_settlements(engine).items()}
    counts: Counter[str] = Counter(
        SettlementPhase.BROADCASTING
        if b.status == BlockStatus.MATURE and phases.get(b.id) == SettlementPhase.BROADCASTING
        else b.status
        for b in list_blocks(engine)
    )
    return {state: counts.get(state, 0) for state in SETTLEMENT_STATES}


def _set_coinbase_location(engine: Engine, block_id: int, txid: bytes, first_vout: int) -> None:
    """Coinbase mode: remember the coinbase txid and its first payout output's index."""
    with write_connection(engine) as conn, conn.begin():
        conn.execute(
            update(Settlement)
            .where(Settlement.block_id == block_id, Settlement.mode == "coinbase")
            .values(funding_txid=txid, funding_vout=first_vout)
        )


def _prefix_at(coinbase: Tx, outputs: Sequence[TxOut]) -> int | None:
    """Index at which ``outputs`` appear, in order, among the coinbase's outputs."""
    outs = list(coinbase.outputs)
    n = len(outputs)
    for i in range(len(outs) - n + 1):
        if outs[i : i + n] == list(outputs):
            return i
    return None


class SettlementRunner:
    """Tracks the pool's recorded blocks and steps their settlement (module docstring)."""

    def __init__(
        self,
        pool: SettledPool,
        node: Node,
        *,
        mode: SettlementMode | None = None,
        interval: float | None = None,
        config: LifecycleConfig | None = None,
        fee_wallet: FeeWallet | None = None,
        fallback_signer: FallbackSigner | None = None,
        clock: Callable[[], float] = time.time,
        sessions: SessionRegistry | None = None,
    ) -> None:
        self.pool = pool
        self.engine = pool.engine
        self.node = node
        self.mode = mode if mode is not None else mode_from_settings(pool.settings)
        self.interval = (
            interval if interval is not None else pool.settings.settlement.poll_interval_sec
        )
        if not self.interval > 0:
            raise ValidationError("the settlement poll interval must be positive")
        self.clock = clock
        # Signing sessions by id, in the store, shared with the API's /v1/musig2/sessions
        # endpoints of every process: each change runs under the session's row lock.
        self.sessions = sessions if sessions is not None else SessionRegistry(self.engine)
        if fallback_signer is None:
            fallback_signer = fallback_signer_from_settings(pool.settings)
        self.lifecycle = SettlementLifecycle(
            self.engine,
            node,
            config=config,
            fee_wallet=fee_wallet,
            fallback_signer=fallback_signer,
            session_factory=self._open_session,
            musig2_resolver=self._musig2_output,
            clock=clock,
            sessions=self.sessions,
        )
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._behind_warned = False
        self._mismatched: set[int] = set()  # blocks left untracked on purpose (logged once)

    # -- tracking -----------------------------------------------------------------------------

    def track(self, block: BlockRecord, fitted: FittedDistribution, coinbase: Tx | None) -> bool:
        """Track a newly recorded block in this runner's mode; False if it was left untracked
        (its coinbase lacks the mode's outputs) or was already tracked."""
        dist, revenue, mode = fitted.distribution, block.revenue, self.mode
        if mode.name == "coinbase":
            created = self.lifecycle.track_coinbase(block.id)
            if coinbase is not None:
                at = _prefix_at(coinbase, compute_outputs(dist, revenue).outputs)
                if at is None:
                    return self._mismatch(block, "the distribution's payout outputs")
                _set_coinbase_location(self.engine, block.id, coinbase.txid, at)
            return created
        if mode.name == "ctv":
            # build_ctv_fanout, not ctv_settlement: this block is already on chain, so there is
            # nothing left to refuse; the refusal happened before anything was mined
            # (check_mode_on_node at start, and the JD server's own check).
            fanout = build_ctv_fanout(dist, revenue, mode.ctv)
            if coinbase is None:
                return self.lifecycle.track_ctv(block.id, fanout)
            vout = _prefix_at(coinbase, [fanout.commitment_output])
            if vout is None:
                return self._mismatch(block, "the CTV commitment output")
            funding = OutPoint(coinbase.txid, vout)
            created = self.lifecycle.track_ctv(block.id, fanout.bind(funding))
            if created:
                # The tree was bound above: the exit paths are final from this moment on.
                bind_funding(self.engine, block.id, funding.txid, funding.n, [])
            return created
        out = self._musig2_output(block)
        assert out is not None  # the mode carries the committee (SettlementMode checks it)
        if coinbase is not None and _prefix_at(coinbase, [out.txout]) is None:
            return self._mismatch(block, "the MuSig2 settlement output")
        return self.lifecycle.track_musig2(block.id, out)

    def _mismatch(self, block: BlockRecord, what: str) -> bool:
        self._mismatched.add(block.id)
        log.error(
            "block %d (%s) not tracked for %s settlement: its coinbase lacks %s",
            block.id, display_hex(block.block_hash), self.mode.name, what,
        )
        return False

    def _musig2_output(self, block: BlockRecord) -> Musig2Output | None:
        """The block's musig2 output, rebuilt from its distribution (restart-safe)."""
        m = self.mode.musig2
        if m is None or block.distribution_id is None:
            return None
        return m.build(self.pool.distribution(block.distribution_id).distribution, block.revenue)

    def _open_session(self, out: Musig2Output, funding: OutPoint, now: float) -> SigningSession:
        cfg = self.lifecycle.config
        nd = now + cfg.nonce_timeout
        return open_signing_session(out, funding, nonce_deadline=nd,
                                    sig_deadline=nd + cfg.sig_timeout, psig_check=cfg.psig_check)

    def signing_session_id(self, block_id: int) -> str | None:
        """The id under which the API serves the block's MuSig2 signing session (None when it
        has none)."""
        return self.sessions.block_session(block_id)

    # -- polling ------------------------------------------------------------------------------

    async def poll_once(self) -> StepReport:
        """One lifecycle step (under the runner's lock), events logged."""
        async with self._lock:
            return await self._step_locked()

    async def track_untracked(self) -> list[int]:
        """Track every recorded block that has no settlement yet: the process that recorded it
        died before it could hand it over (``record_block`` commits the block and its ledger
        lines; tracking is the next write). Its coinbase is read from the node so the mode's
        outputs are checked as on the live path; a block the node does not have yet waits for
        a later step. Returns the ids tracked now."""
        tracked = load_settlements(self.engine)
        done = []
        for block in list_blocks(self.engine):
            if (block.id in tracked or block.id in self._mismatched
                    or block.distribution_id is None or block.status == "orphaned"):
                continue
            raw = await self.node.get_block(block.block_hash)
            if raw is None:
                continue
            fitted = self.pool.distribution(block.distribution_id)
            if self.track(block, fitted, Block.parse(raw).txs[0]):
                log.warning("block %d (%s) was recorded but not tracked (the process stopped "
                            "in between): tracked now", block.id, display_hex(block.block_hash))
                done.append(block.id)
        return done

    async def _step_locked(self) -> StepReport:
        await self.track_untracked()
        if await self._node_behind():
            return StepReport()
        events = await self.lifecycle.step(self.clock())
        await self._locate_coinbases()
        for e in events:
            event_log.info(json.dumps({"ts": round(time.time(), 3), "event": e.kind,
                                       "block_id": e.block_id, "detail": e.detail}))
        return events

    async def _node_behind(self) -> bool:
        """True when the node has never seen the newest block this store saw confirmed."""
        seen = [b for b in list_blocks(self.engine) if b.status in (
            BlockStatus.CONFIRMED, BlockStatus.MATURE, BlockStatus.PAID)]
        if not seen:
            return False
        newest = max(seen, key=lambda b: b.height)
        if await self.node.get_block(newest.block_hash) is not None:
            self._behind_warned = False
            return False
        if not self._behind_warned:
            self._behind_warned = True
            log.warning(
                "the node does not know block %s (height %d) that this store saw confirmed: "
                "another chain, or a node still syncing; settlements wait",
                display_hex(newest.block_hash), newest.height,
            )
        return True

    async def _locate_coinbases(self) -> None:
        """Coinbase-mode blocks recorded without their coinbase: read it from the node once the
        block is in the active chain and remember where the payouts are."""
        missing = [
            b for b, s in load_settlements(self.engine).items()
            if s.mode == "coinbase" and s.funding_txid is None
        ]
        for block_id in missing:
            block = get_block(self.engine, block_id)
            if (block is None or block.status == BlockStatus.ORPHANED
                    or block.distribution_id is None):
                continue
            if await self.node.block_hash(block.height) != block.block_hash:
                continue
            raw = await self.node.get_block(block.block_hash)
            if raw is None:
                continue
            coinbase = Block.parse(raw).txs[0]
            dist = self.pool.distribution(block.distribution_id).distribution
            at = _prefix_at(coinbase, compute_outputs(dist, block.revenue).outputs)
            if at is not None:
                _set_coinbase_location(self.engine, block_id, coinbase.txid, at)

    async def run(self, *, max_backoff: float = 60.0) -> None:
        """Poll until cancelled; a failing step is logged and retried at the next interval.

        A node that cannot be reached (or refuses a request) is one warning line per distinct
        reason, not a traceback per poll, and the retry delay doubles up to ``max_backoff``;
        a line says when a step succeeds again."""
        delay = self.interval
        failing: str | None = None
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except NodeError as e:
                delay = min(delay * 2, max(max_backoff, self.interval))
                if e.reason != failing:
                    log.warning("settlement waits for the node: %s; retrying with back-off up "
                                "to %.0f s", e.reason, max(max_backoff, self.interval))
                failing = e.reason
            except Exception:
                log.exception("settlement step failed; retrying in %.1f s", self.interval)
            else:
                if failing is not None:
                    log.info("settlement resumed: the node answers again")
                failing, delay = None, self.interval
            await asyncio.sleep(delay)

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run` as a task of the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="settlement")
        return self._task

    async def stop(self) -> None:
        """Cancel the polling task and wait for it (a step in progress stops at its next
        node call; everything it wrote is committed, everything else is redone next start)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- operator actions ---------------------------------------------------------------------

    def _settled_block(self, block_id: int, mode: str | None = None) -> BlockRecord:
        block = get_block(self.engine, block_id)
        if block is None:
            raise ValidationError(f"block {block_id} does not exist", code="unknown-block")
        s = load_settlements(self.engine).get(block_id)
        if s is None:
            raise SettlementActionError(
                f"block {block_id} has no settlement (recorded without a settlement runner, or "
                "its coinbase lacked the mode's outputs)", code="untracked-block")
        if s.mode == "coinbase":
            raise SettlementActionError(
                f"block {block_id} pays in its coinbase: there is nothing to broadcast",
                code="nothing-to-broadcast")
        if mode is not None and s.mode != mode:
            raise SettlementActionError(
                f"block {block_id} settles in {s.mode} mode, not {mode}",
                code=f"not-{mode}-settlement")
        if block.status == BlockStatus.ORPHANED:
            raise SettlementActionError(
                f"block {block_id} left the active chain", code="block-orphaned")
        return block

    async def _track_first(self, block_id: int) -> None:
        """A recorded block with no settlement row yet (the process stopped between the two
        commits and the poller has not stepped since): track it now, as the poller would."""
        if block_id not in load_settlements(self.engine):
            async with self._lock:
                await self.track_untracked()

    def _report(self, block_id: int, events: Sequence[LifecycleEvent],
                sent: Sequence[SendResult]) -> ActionReport:
        block = get_block(self.engine, block_id)
        assert block is not None
        s = load_settlements(self.engine)[block_id]
        return ActionReport(
            block_id, block.status, s.phase,
            tuple(e for e in events if e.block_id == block_id),
            tuple(r for r in sent if r.block_id == block_id),
            tuple(load_txs(self.engine, block_id)),
        )

    async def _active_tip(self, block: BlockRecord) -> int:
        """The node's tip height, once its active chain is seen to hold ``block`` (409
        ``not-in-active-chain`` otherwise: not reached yet, another chain, or reorged out,
        which the poller handles). Asked of the node, not the store, so that an action checks
        what the step it would run is going to see."""
        tip = (await self.node.tip()).height
        if await self.node.block_hash(block.height) != block.block_hash:
            raise SettlementActionError(
                f"the node's active chain does not hold block {block.id} at height "
                f"{block.height} (tip {tip})", code="not-in-active-chain", tip=tip)
        return tip

    async def broadcast(self, block_id: int) -> ActionReport:
        """Re-send the block's pending payout txs now and send the ones that became
        broadcastable: one lifecycle step, reporting the node's answer to each send.

        Refused (409, before any step, so nothing changes) unless the node's active chain holds
        the block with its coinbase spendable in the next block: ``not-in-active-chain``,
        ``not-mature`` (with ``mature_at_tip``)."""
        await self._track_first(block_id)
        block = self._settled_block(block_id)
        async with self._lock:
            tip = await self._active_tip(block)
            if not coinbase_spendable(block.height, tip):
                raise SettlementActionError(
                    f"block {block_id}'s coinbase can be spent from tip "
                    f"{first_mature_tip(block.height)} on (100 confirmations); the tip is {tip}",
                    code="not-mature", mature_at_tip=first_mature_tip(block.height), tip=tip)
            report = await self._step_locked()
        return self._report(block_id, report, report.sent)

    def _refuse_if_signed(self, block_id: int) -> None:
        sid = session_id(block_id)
        if self.sessions.exists(sid) and self.sessions.tick(
                sid, self.clock()).state is SessionState.COMPLETE:
            raise _signed(block_id)

    def _abort_unless_signed(self, block_id: int) -> None:
        """Abort the block's session in one transaction under its row lock, refused if the
        committee completed it (in any process) first: no signer's call can slip in between
        the check and the abort."""
        now = self.clock()

        def abort(s: SigningSession) -> None:
            if s.tick(now) is SessionState.COMPLETE:
                raise _signed(block_id)
            if s.state is not SessionState.FAILED:
                s.abort(now, "operator chose the fallback")
                log.info("block %d: signing session aborted by the operator", block_id)

        sid = session_id(block_id)
        if self.sessions.exists(sid):
            self.sessions.apply(sid, abort)

    async def fallback(self, block_id: int) -> ActionReport:
        """MuSig2: give up the cooperative spend and send the signed script-path fallback.

        Refused (409, before any step, so nothing changed) before the fallback's BIP-68 lock
        allows it in the next block (``fallback-locked``, with ``valid_from_height``), when the
        node's active chain does not hold the block (``not-in-active-chain``), once the
        committee signed (``signing-complete``), or without a fallback signer
        (``fallback-unavailable``). The check and the abort are one transaction under the
        session's row lock, so no signer's call (to any process) can slip in between."""
        await self._track_first(block_id)
        block = self._settled_block(block_id, "musig2")
        if self.lifecycle.fallback_signer is None:
            raise SettlementActionError("no fallback signer is configured on this server",
                                        code="fallback-unavailable")
        rows = load_txs(self.engine, block_id)
        if any(r.role == TxRole.COOPERATIVE for r in rows):
            raise SettlementActionError(
                f"block {block_id}'s cooperative spend is signed; a fallback would conflict",
                code="signing-complete")
        out = self._musig2_output(block)
        assert out is not None
        valid_from = max(block.height + out.params.fallback_delay,
                         block.height + COINBASE_MATURITY)
        async with self._lock:
            self._refuse_if_signed(block_id)
            tip = (await self.node.tip()).height
            if tip + 1 < valid_from:
                raise SettlementActionError(
                    f"the fallback of block {block_id} is valid from height {valid_from} "
                    f"(BIP-68, {out.params.fallback_delay} blocks after the coinbase); the "
                    f"next block is {tip + 1}", code="fallback-locked",
                    valid_from_height=valid_from, tip=tip)
            await self._active_tip(block)
            events: list[LifecycleEvent] = []
            sent: list[SendResult] = []
            if self.lifecycle.session(block_id) is None:
                # No session yet (the poller has not stepped since maturity): the step opens
                # one, as the poller would; a session only completes through signers' calls, so this
                # step cannot send the cooperative spend.
                opened = await self._step_locked()
                events += opened
                sent += opened.sent
            self._abort_unless_signed(block_id)  # signers may have completed it meanwhile
            report = await self._step_locked()
            events += report
            sent += report.sent
        return self._report(block_id, events, sent)


def _signed(block_id: int) -> SettlementActionError:
    return SettlementActionError(
        f"block {block_id}'s committee has signed; the cooperative spend goes out",
        code="signing-complete")


__all__ = [
    "SETTLEMENT_STATES",
    "ActionReport",
    "SettledPool",
    "SettlementActionError",
    "SettlementRunner",
    "fallback_signer_from_settings",
    "session_id",
    "settlement_states",
]
