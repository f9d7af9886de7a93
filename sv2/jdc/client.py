"""The asyncio Job Declaration client (sv2-spec 06-Job-Declaration-Protocol.md, Full-Template
mode) with extensions 0x0003 (PR #203), 0x4003 (settlement modes) and 0x4002 (the PR #202
per-job adapter). docs/jdc.md shows it from a miner's side.

This module only drives. What the messages mean is the sans-I/O
:class:`~sv2.jdc.session.JdcSession` (request building, the pushed payout state, the
coinbase, what each answer means); TCP, Noise NX (authority key checked), the reader task and
request futures are :class:`~sv2.client.ClientSession`'s. Here: the order of the requests,
waiting for answers and for the first distribution, asking the miner's node about CTV, and the
fallback (sv2-spec §6.4.5: a refused job "should trigger fallback to another pool+JDS or to
solo mining": the ``fallback`` event, the list of events and the miner's callback).

Flow (reference/sv2.md §1.5, §4.4):

1. TCP + Noise; ``SetupConnection`` (protocol 1, version 2, ``DECLARE_TX_DATA``);
2. ``RequestExtensions`` with a timeout (0x0003, and 0x4003 / 0x4002 if asked for);
3. with 0x0003: wait for the first ``SetPayoutDistribution`` (PR #203 §3.1: the first message
   after the negotiation) and, with 0x4003, its ``SetSettlementMode``; only then are the
   :attr:`~JobDeclarationClient.constraints` (CoinbaseOutputConstraints) known -- PR #203: the
   JDC MUST NOT send them before the first distribution;
4. per job: ``AllocateMiningJobToken``, build the coinbase for the mode and T,
   ``DeclareMiningJob`` with the ``distribution_id`` TLV and the wtxids; answer
   ``ProvideMissingTransactions`` from the template's transactions;
5. ``DeclareMiningJob.Error``: the code is logged; ``stale-payout-distribution`` waits for the
   newer distribution and declares again (PR #203 §7.3: not a reason to fall back unless it
   persists); anything else fires the ``fallback`` event and raises
   :class:`DeclarationRejected`;
6. ``PushSolution`` for the job once mined (§6.4.9).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

from payouts.distribution.fitting import Budget
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.ctv import CtvNotActiveError
from payouts.settlement.modes import (
    DeploymentInfo,
    ExpectedOutputs,
    SettlementMode,
    check_ctv_for,
    ctv_active_on,
)
from payouts.tx.txout import TxOut
from sv2.client import ClientSession, Progress
from sv2.connection import JD_FRAME_LIMITS, MalformedMessage
from sv2.jdc.constraints import OutputConstraints
from sv2.jdc.errors import (
    DeclarationRejected,
    FallbackEvent,
    JdcConnectionLost,
    JdcError,
    JdcTimeout,
    SetupRejected,
)
from sv2.jdc.session import (
    DEFAULT_EXTENSIONS,
    Accepted,
    ConstraintsChanged,
    DeclaredJob,
    JdcSession,
    Redeclare,
)
from sv2.job_coinbase import DEFAULT_EXTRANONCE_SIZE, DEFAULT_TAG, JobCoinbase
from sv2.messages.base import Message
from sv2.messages.extensions import RequestExtensionsError, RequestExtensionsSuccess
from sv2.messages.job_declaration import (
    AllocateMiningJobTokenSuccess,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactionsSuccess,
    PushSolution,
)
from sv2.messages.payouts import (
    EXT_NON_CUSTODIAL_PAYOUTS,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
)
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from sv2.messages.template_distribution import CoinbaseOutputConstraints
from sv2.noise_transport import FrameLimits
from sv2.solution import Solution
from sv2.template import JobTemplate

log = logging.getLogger(__name__)

OnFallback = Callable[[FallbackEvent], Awaitable[None] | None]
OnConstraints = Callable[[OutputConstraints], Awaitable[None] | None]


class JobDeclarationClient(ClientSession):
    """A JD client connection. Use ``async with JobDeclarationClient(...) as c`` or
    :meth:`connect` / :meth:`close`.

    ``authority_pubkey``: the pool's 32-byte x-only authority key (``None`` skips the check:
    encrypted but unauthenticated -- only for tests). ``extensions``: requested in order;
    0x4003 needs 0x0003. ``expected_outputs``: the same callable the server was given for
    modes without a built-in rule (musig2). ``budget``: refuse to build a coinbase whose
    payout outputs exceed it (the constraints the TP got). ``node``: the miner's own node,
    asked before each declaration in a mode that needs CTV (``ctv``, musig2 with the CTV leaf)
    whether BIP-119 is enforced; if it is not, or there is no node to ask, the client builds
    no such coinbase and falls back with ``ctv-not-active`` (ARCHITECTURE invariant 4: a CTV
    output is anyone-can-spend on a chain that does not enforce it). ``fallback`` is set (and
    stays set) once any declaration has failed for good.
    """

    TIMEOUT: ClassVar[type[JdcError]] = JdcTimeout
    LOST: ClassVar[type[JdcError]] = JdcConnectionLost
    REJECTED: ClassVar[type[JdcError]] = SetupRejected
    READER_NAME: ClassVar[str] = "jdc-reader"
    LOG_PREFIX: ClassVar[str] = "JDC"
    # ProvideMissingTransactions.Success may carry the whole block's transactions.
    FRAME_LIMITS: ClassVar[FrameLimits] = JD_FRAME_LIMITS

    def __init__(
        self,
        host: str,
        port: int,
        authority_pubkey: bytes | None,
        *,
        extensions: Sequence[int] = DEFAULT_EXTENSIONS,
        user_identifier: str = "payouts-jdc",
        timeout: float = 10.0,
        distribution_timeout: float = 30.0,
        extranonce_size: int = DEFAULT_EXTRANONCE_SIZE,
        tag: bytes = DEFAULT_TAG,
        expected_outputs: ExpectedOutputs | None = None,
        budget: Budget | None = None,
        max_redeclare: int = 3,
        on_fallback: OnFallback | None = None,
        on_constraints: OnConstraints | None = None,
        progress: Progress | None = None,
        vendor: str = "payouts-jdc",
        node: DeploymentInfo | None = None,
        coinbase_only: bool = False,
    ) -> None:
        super().__init__(host, port, authority_pubkey, timeout=timeout, progress=progress)
        self.session = JdcSession(
            extensions=extensions,
            user_identifier=user_identifier,
            extranonce_size=extranonce_size,
            # Coinbase-only: the pool rebuilds the scriptSig as coinbase_prefix (at most 8
            # bytes, §5.3.18) + extranonce, so no tag fits between them.
            tag=b"" if coinbase_only else tag,
            coinbase_only=coinbase_only,
            expected_outputs=expected_outputs,
            budget=budget,
            max_redeclare=max_redeclare,
            vendor=vendor,
            stats=self.stats,
        )
        self.node = node
        self.distribution_timeout = distribution_timeout
        self.on_fallback = on_fallback
        self.on_constraints = on_constraints
        self.fallback = asyncio.Event()
        self.fallback_events: list[FallbackEvent] = []

    # -- what the session knows -----------------------------------------------------------------

    @property
    def negotiated(self) -> frozenset[int]:
        return self.session.negotiated

    @property
    def distribution(self) -> Distribution | None:
        return self.session.payouts.distribution

    @property
    def previous_distribution(self) -> Distribution | None:
        return self.session.payouts.previous_distribution

    @property
    def modes(self) -> dict[int, SettlementMode]:
        return self.session.payouts.modes

    @property
    def constraints(self) -> OutputConstraints | None:
        return self.session.payouts.constraints

    @property
    def ctv_active(self) -> bool | None:
        """The node's last answer to "is BIP-119 enforced?" (``None``: not asked)."""
        return self.session.ctv_active

    def mode_for(self, distribution_id: int) -> SettlementMode:
        """The settlement mode announced for a distribution (``coinbase`` without 0x4003)."""
        return self.session.payouts.mode_for(distribution_id)

    def constraints_message(self) -> CoinbaseOutputConstraints:
        """CoinbaseOutputConstraints for the Template Provider (refused before the first
        distribution, PR #203)."""
        return self.session.payouts.constraints_message()

    def build_coinbase(
        self, template: JobTemplate, distribution: Distribution | None = None, **kw: bytes
    ) -> JobCoinbase:
        """The coinbase :meth:`declare_job` declares (:meth:`JdcSession.build_coinbase`)."""
        return self.session.build_coinbase(template, distribution, **kw)

    # -- lifecycle ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, handshake, SetupConnection, negotiate extensions and (with 0x0003) wait for
        the first distribution. Raises :class:`SetupRejected`, :class:`JdcTimeout`,
        :class:`JdcConnectionLost` or a :class:`~sv2.connection.HandshakeFailed` (wrong
        authority key, expired certificate)."""
        await self._open()
        await self._setup_connection(self.session.setup_connection(self.host, self.port))
        if self.session.requested_extensions:
            await self._negotiate()
        if EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated:
            d = await self.wait_for_distribution(timeout=self.distribution_timeout)
            c = self.constraints
            if c is None:
                self._say(f"distribution {d.distribution_id}: {len(d.payouts)} payees; no usable "
                          "settlement mode: declarations for it fall back")
                return
            self._say(
                f"distribution {d.distribution_id} ({self.mode_for(d.distribution_id).name}): "
                f"{len(d.payouts)} payees; CoinbaseOutputConstraints size="
                f"{c.max_additional_size} sigops={c.max_additional_sigops}"
            )

    async def _negotiate(self) -> None:
        req = self.session.request_extensions()
        reply = await self._request(req, "ext", req.request_id, "RequestExtensions")
        assert isinstance(reply, RequestExtensionsSuccess | RequestExtensionsError)
        self.session.on_extensions(reply)
        if isinstance(reply, RequestExtensionsError):
            self._say(
                "extensions refused: "
                + ", ".join(f"{e:#06x}" for e in reply.unsupported_extensions)
                + "; base-spec JD (pool payout output only)"
            )
            return
        names = ", ".join(f"{e:#06x}" for e in reply.supported_extensions) or "none"
        self._say(f"extensions negotiated: {names}")

    # -- driving the session --------------------------------------------------------------------

    def _receive(self, msg: Message) -> Sequence[object]:
        return self.session.receive(msg)

    def _malformed(self, item: MalformedMessage) -> Sequence[object]:
        return self.session.malformed(item)

    async def _on_output(self, out: object) -> None:
        if isinstance(out, ConstraintsChanged):
            if self.on_constraints is not None:
                res = self.on_constraints(out.constraints)
                if inspect.isawaitable(res):
                    await res
            return
        if isinstance(out, ProvideMissingTransactionsSuccess):
            self._say(f"server asked for {len(out.transaction_list)} transaction(s); sending them")
        await super()._on_output(out)

    async def wait_for_distribution(
        self, *, after: int | None = None, timeout: float | None = None
    ) -> Distribution:
        """The current distribution once there is one newer than ``after`` (and, with 0x4003,
        its settlement mode has arrived: the server sends it right after)."""
        limit = self.distribution_timeout if timeout is None else timeout
        payouts = self.session.payouts

        def ready() -> bool:
            modes = EXT_SETTLEMENT_MODES in self.negotiated
            return self._closed_reason is not None or payouts.ready(after, modes) is not None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), limit)
            except TimeoutError:
                d = payouts.newer_than(after)
                if d is not None:
                    # The mode never came: no coinbase is built on a guess; a declaration
                    # for it falls back (no-settlement-mode).
                    log.warning("JDC: no SetSettlementMode for %d: declarations for it fall "
                                "back", d.distribution_id)
                    return d
                raise JdcTimeout(
                    "no SetPayoutDistribution"
                    + (f" newer than {after}" if after is not None else "")
                    + f" within {limit:g}s"
                ) from None
        d = payouts.newer_than(after)
        if d is None:
            raise JdcConnectionLost(self._closed_reason or "connection closed")
        return d

    # -- declaring ------------------------------------------------------------------------------

    async def allocate_token(self) -> AllocateMiningJobTokenSuccess:
        """AllocateMiningJobToken -> .Success (§6.4.2-3). With 0x0003 its outputs are empty
        (PR #203 §2); without it the first one is the pool payout output."""
        req = self.session.allocate_token()
        reply = await self._request(req, "token", req.request_id, "AllocateMiningJobToken")
        assert isinstance(reply, AllocateMiningJobTokenSuccess)
        return reply

    async def _ask_ctv(self, distribution: Distribution | None) -> None:
        """Before a coinbase in a mode that needs CTV: ask the own node again (its answer is
        also what :meth:`build_coinbase` checks) and refuse before any token is allocated.
        Other modes ask nothing."""
        mode = self.session.mode_needing_ctv(distribution)
        if mode is not None:
            answer = await ctv_active_on(self.node)
            self.session.ctv_active = None if answer is None else answer is True
            check_ctv_for(mode, self.session.ctv_active, "the JD client")

    async def _declare_once(
        self, template: JobTemplate, token: bytes, coinbase: JobCoinbase
    ) -> DeclareMiningJobSuccess | DeclareMiningJobError:
        msg = self.session.declare(template, token, coinbase)
        try:
            reply = await self._request(msg, "declare", msg.request_id, "DeclareMiningJob")
        finally:
            self.session.forget(msg.request_id)
        assert isinstance(reply, DeclareMiningJobSuccess | DeclareMiningJobError)
        return reply

    async def declare_job(
        self, template: JobTemplate, *, distribution: Distribution | None = None
    ) -> DeclaredJob:
        """Allocate a token, build the coinbase for the distribution (default: the latest at
        build time) and its mode, declare it; redeclare after ``stale-payout-distribution``
        (with the newer distribution, up to ``max_redeclare`` times); on any other error fire
        the fallback and raise :class:`DeclarationRejected`."""
        attempts = 0
        dist = distribution
        while True:
            attempts += 1
            coinbase: JobCoinbase | None = None
            try:
                await self._ask_ctv(dist)
                alloc = await self.allocate_token()
                coinbase = self.build_coinbase(
                    template, dist, token_outputs=alloc.coinbase_tx_outputs
                )
                reply = await self._declare_once(template, alloc.mining_job_token, coinbase)
            except JdcConnectionLost:
                raise
            except (JdcError, CtvNotActiveError, ValidationError) as exc:
                # CtvNotActiveError: the pool settles in a mode this miner's chain cannot
                # enforce, so no such coinbase is built or declared; ValidationError: this
                # client cannot build a coinbase for the pool's rule (budget, mode, T, F >= T);
                # JdcError: a timeout, or no usable settlement mode for the distribution.
                raise await self._give_up(
                    exc.code, exc.message, template, coinbase, attempts
                ) from None
            verdict = self.session.judge(reply, template, coinbase, attempts)
            if isinstance(verdict, Accepted):
                self._say(
                    f"DeclareMiningJob.Success: job {verdict.job.request_id}, "
                    f"{len(template.transactions)} txs, T={template.revenue} sat, "
                    f"mode {coinbase.mode}"
                    + (
                        f", distribution {coinbase.distribution_id}"
                        if coinbase.distribution_id is not None
                        else ""
                    )
                )
                return verdict.job
            self._say(f"DeclareMiningJob.Error {verdict.code}: {verdict.details}".rstrip(": "))
            if isinstance(verdict, Redeclare):
                try:
                    dist = await self.wait_for_distribution(after=verdict.after)
                except JdcError as exc:
                    raise await self._give_up(
                        verdict.code,
                        f"{verdict.details}; {exc.message}",
                        template,
                        coinbase,
                        attempts,
                    ) from None
                self._say(f"redeclaring with distribution {dist.distribution_id}")
                continue
            raise await self._give_up(verdict.code, verdict.details, template, coinbase, attempts)

    async def coinbase_only_job(
        self, template: JobTemplate, *, distribution: Distribution | None = None
    ) -> DeclaredJob:
        """Coinbase-only mode (sv2-spec §6.1; PR #203 §2, §6): allocate a token and build the
        coinbase for the distribution (default: the latest) and its mode; nothing is declared.
        The job goes to the pool as ``SetCustomMiningJob`` with the token and the
        ``distribution_id`` TLV (:meth:`sv2.jdc.pool_channel.PoolChannel.set_custom_job` with
        ``coinbase_only=True``), where the pool checks it against the distribution alone.
        A client not connected in Coinbase-only mode, or without 0x0003, falls back."""
        coinbase: JobCoinbase | None = None
        try:
            if not self.session.coinbase_only:
                raise JdcError("this connection declared DECLARE_TX_DATA (Full-Template mode)",
                               code="not-coinbase-only")
            if EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated:
                raise JdcError("Coinbase-only jobs carry the distribution_id TLV: 0x0003 is "
                               "not negotiated", code="extension-not-negotiated")
            await self._ask_ctv(distribution)
            alloc = await self.allocate_token()
            coinbase = self.build_coinbase(template, distribution,
                                           token_outputs=alloc.coinbase_tx_outputs)
        except JdcConnectionLost:
            raise
        except (JdcError, CtvNotActiveError, ValidationError) as exc:
            raise await self._give_up(exc.code, exc.message, template, coinbase, 1) from None
        self._count("coinbase-only-jobs")
        self._say(f"Coinbase-only job: token allocated, T={template.revenue} sat, mode "
                  f"{coinbase.mode}, distribution {coinbase.distribution_id}")
        return DeclaredJob(alloc.request_id, alloc.mining_job_token, template, coinbase,
                           coinbase.distribution_id, coinbase.mode, 1)

    async def request_payout_outputs(self, token: bytes, value: int) -> tuple[TxOut, ...]:
        """Per-job adapter (0x4002, sv2-spec PR #202): the outputs paying exactly ``value``
        for this token; one round trip. Raises :class:`JdcError` with the server's code."""
        req = self.session.request_payout_outputs(token, value)
        reply = await self._request(req, "payout-outputs", req.request_id, "RequestPayoutOutputs")
        assert isinstance(reply, RequestPayoutOutputsSuccess | RequestPayoutOutputsError)
        return self.session.payout_outputs(reply, value)

    async def declare_job_per_job(self, template: JobTemplate) -> DeclaredJob:
        """The per-job flow: token, RequestPayoutOutputs with T, a coinbase paying exactly
        those outputs, DeclareMiningJob with the same token. Errors fire the fallback."""
        coinbase: JobCoinbase | None = None
        try:
            alloc = await self.allocate_token()
            outs = await self.request_payout_outputs(alloc.mining_job_token, template.revenue)
            self._say(
                f"RequestPayoutOutputs.Success: {len(outs)} outputs for {template.revenue} sat"
            )
            coinbase = self.session.build_outputs_coinbase(outs, template)
            reply = await self._declare_once(template, alloc.mining_job_token, coinbase)
        except JdcConnectionLost:
            raise
        except (JdcError, ValidationError) as exc:
            raise await self._give_up(exc.code, exc.message, template, coinbase, 1) from None
        if isinstance(reply, DeclareMiningJobError):
            refusal = self.session.refused(reply)
            raise await self._give_up(refusal.code, refusal.details, template, coinbase, 1)
        job = self.session.accepted(reply, template, coinbase, 1)
        self._say(f"DeclareMiningJob.Success: job {reply.request_id} (per-job outputs)")
        return job

    # -- fallback -------------------------------------------------------------------------------

    async def _emit_fallback(self, event: FallbackEvent) -> None:
        self.fallback_events.append(event)
        self.fallback.set()
        self._count(f"fallback:{event.code}")
        self._say(f"fallback: {event.code} {event.details}".rstrip())
        if self.on_fallback is not None:
            try:
                res = self.on_fallback(event)
                if inspect.isawaitable(res):
                    await res
            except Exception:  # the miner's handler must not break the client
                log.exception("JDC: fallback callback failed")

    async def _give_up(
        self,
        code: str,
        details: str,
        template: JobTemplate,
        coinbase: JobCoinbase | None,
        attempts: int,
    ) -> DeclarationRejected:
        ev = FallbackEvent(
            code,
            details,
            template,
            coinbase,
            coinbase.distribution_id if coinbase else None,
            attempts,
        )
        await self._emit_fallback(ev)
        return DeclarationRejected(ev)

    # -- solutions ------------------------------------------------------------------------------

    def push_solution(self, job: DeclaredJob, solution: Solution) -> PushSolution:
        """Send PushSolution (§6.4.9) for ``job`` -- valid for the most recent
        DeclareMiningJob.Success on this connection. There is no reply message; whether the
        block was accepted is the node's to say."""
        msg = self.session.push_solution(solution)
        self._send(msg)
        self._count("solutions-pushed")
        self._say(f"PushSolution sent: block {solution.header.hash_hex}")
        return msg


__all__ = [
    "DEFAULT_EXTENSIONS",
    "DeclarationRejected",
    "DeclaredJob",
    "FallbackEvent",
    "JdcConnectionLost",
    "JdcError",
    "JdcTimeout",
    "JobDeclarationClient",
    "OnConstraints",
    "OnFallback",
    "SetupRejected",
]
