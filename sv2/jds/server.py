"""The asyncio Job Declaration Server (sv2-spec 06-Job-Declaration-Protocol.md, Full-Template
mode) with extensions 0x0003 (PR #203), 0x4002 (the PR #202 per-job adapter) and 0x4003
(settlement modes). docs/jds.md describes the behaviour and every error code.

This module only drives: sockets live in :class:`~sv2.listener.NoiseListener` (shared with the
Template Provider), each connection is a sans-I/O :class:`~sv2.connection.Sv2Connection` plus
a sans-I/O :class:`~sv2.jds.session.JdsSession`, and the server feeds each decoded item to the
session, answers the session's node requests from the :class:`~payouts.node.interface.Node`,
writes what it returns and runs the timers (the template refresh). The state all connections
share (tokens, distributions, transactions, found blocks, counters) is one
:class:`~sv2.jds.session.JdsShared`, touched synchronously between awaits (the background
template refresh prepares a template in a worker thread and installs it in one synchronous
step). Anything a peer does wrong ends *its* connection (or earns it an error message); no
exception escapes a connection task.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from payouts.distribution.fitting import FittedDistribution
from payouts.distribution.model import Distribution
from payouts.errors import ConfigError
from payouts.node.interface import ChainTip, Node, NodeError
from payouts.node.submit import submit_found_block
from payouts.settings import Settings
from payouts.settlement.modes import (
    ExpectedOutputs,
    SettlementMode,
    check_ctv_for,
    ctv_active_on,
    default_expected_outputs,
)
from payouts.tx.coinbase import HALVING_INTERVAL_MAINNET, HALVING_INTERVAL_REGTEST
from sv2.coinbase_only import CoinbaseOnlyGrant
from sv2.connection import (
    Sv2Connection,
)
from sv2.declared_job import DeclaredJob, FoundBlock
from sv2.distribution_book import DistributionBook, Published
from sv2.domain_messages import mode_to_message
from sv2.jds import errors as E
from sv2.jds.declaring import BoundOutputs
from sv2.jds.limits import JdsLimits, RequestLimits
from sv2.jds.session import JdsSession, JdsShared
from sv2.jds.settings import RotatingIdentity, server_arguments
from sv2.jds.state import TxStore
from sv2.jds.steps import NeedMempoolTxs, NeedTemplate, NeedTip, NodeRequest, Output, Step, resume
from sv2.jds.tokens import TokenBook
from sv2.listener import NoiseListener, Peer
from sv2.messages import job_declaration as jd
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from sv2.noise import ServerIdentity
from sv2.session import Disconnect

log = logging.getLogger(__name__)

IMPLEMENTED_EXTENSIONS = (EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS, EXT_SETTLEMENT_MODES)


OnBlock = Callable[[FoundBlock], Awaitable[None] | None]
DistributionSource = Callable[[], Distribution | FittedDistribution | None]


@dataclass(slots=True)
class _Connection(Peer):
    """A connection's socket side and its session."""

    session: JdsSession = field(kw_only=True)

    @property
    def stats(self) -> dict[str, int]:
        """This connection's counters (the session's)."""
        return self.session.stats


class JobDeclarationServer(NoiseListener[_Connection]):
    """JD server. ``distribution_source`` is read once at :meth:`start` (a distribution is
    needed before any client can be served: even base-spec clients get the pool payout script
    from it); later changes go through :meth:`publish`."""

    name = "JDS"
    log = logging.getLogger(__name__)

    def __init__(
        self,
        *,
        identity: ServerIdentity,
        node: Node,
        distribution_source: DistributionSource | Distribution | FittedDistribution | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        supported_extensions: Sequence[int] = (EXT_NON_CUSTODIAL_PAYOUTS, EXT_SETTLEMENT_MODES),
        required_extensions: Sequence[int] = (),
        token_lifetime: float = 600.0,
        server_id: str = "",
        limits: JdsLimits | None = None,
        request_limits: RequestLimits | None = None,
        mode: SettlementMode | None = None,
        expected_outputs: ExpectedOutputs | None = None,
        on_block: OnBlock | None = None,
        clock: Callable[[], float] = time.monotonic,
        authority_secret_key: bytes | None = None,
        cert_validity: int = 3600,
        coinbase_only: bool = False,
    ) -> None:
        unknown = [e for e in supported_extensions if e not in IMPLEMENTED_EXTENSIONS]
        if unknown:
            raise ConfigError(
                "this JDS does not implement extension(s) "
                + ", ".join(f"{e:#06x}" for e in unknown)
            )
        not_supported = [e for e in required_extensions if e not in supported_extensions]
        if not_supported:
            raise ConfigError("required extensions must also be supported")
        lim = limits or JdsLimits()
        super().__init__(host=host, port=port, limits=lim)
        self._identities = RotatingIdentity(identity, authority_secret_key, cert_validity)
        self.node = node
        self.limits = lim
        self.request_limits = request_limits or RequestLimits()
        self.default_mode = mode or SettlementMode()
        self.on_block = on_block
        self.shared = JdsShared(
            tokens=TokenBook(token_lifetime, server_id=server_id),
            book=DistributionBook(lim.grace_period),
            txs=TxStore(),
            expected=expected_outputs or default_expected_outputs,
            supported=tuple(dict.fromkeys(supported_extensions)),
            required=tuple(dict.fromkeys(required_extensions)),
            clock=clock,
            stats=self.stats,
            coinbase_only=coinbase_only,
        )
        self._source = distribution_source
        self._template_lock = asyncio.Lock()
        # The node's answer to "is BIP-119 enforced?", asked in start(); None before.
        self.ctv_active: bool | None = None

    # -- the shared state, by its old names ---------------------------------------------------

    @property
    def identity(self) -> ServerIdentity:
        return self._identities.identity

    def noise_identity(self) -> ServerIdentity:
        """The certificate connections get now (re-signed as it ages): a Mining Protocol server
        beside this one presents the same (one authority key per pool)."""
        return self._identities.current()

    @property
    def tokens(self) -> TokenBook:
        return self.shared.tokens

    @property
    def book(self) -> DistributionBook:
        return self.shared.book

    @property
    def txs(self) -> TxStore:
        return self.shared.txs

    @property
    def found_blocks(self) -> list[FoundBlock]:
        return self.shared.found_blocks

    @property
    def clock(self) -> Callable[[], float]:
        return self.shared.clock

    @property
    def supported(self) -> tuple[int, ...]:
        return self.shared.supported

    @property
    def required(self) -> tuple[int, ...]:
        return self.shared.required

    # -- construction from settings -----------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        node: Node,
        distribution_source: DistributionSource | Distribution | FittedDistribution | None = None,
        *,
        identity: ServerIdentity | None = None,
        mode: SettlementMode | None = None,
        **kwargs: Any,
    ) -> JobDeclarationServer:
        """Build from :class:`payouts.settings.Settings` (``[jds]``,
        :func:`sv2.jds.settings.server_arguments`); ``mode`` defaults to
        :func:`~payouts.settlement.modes.mode_from_settings` (``payouts serve`` passes the one
        object its settlement runner uses). The certificate is signed with
        ``jds.authority_secret_key`` and re-signed when half of ``cert_validity_sec`` has
        passed."""
        args = server_arguments(settings, IMPLEMENTED_EXTENSIONS, identity=identity, mode=mode)
        return cls(node=node, distribution_source=distribution_source, **args, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Ask the node whether CTV is enforced, publish the first distribution, listen.

        Raises :class:`~payouts.settlement.ctv.CtvNotActiveError` (nothing listens, nothing
        published) when the default mode or a distribution published before ``start`` needs
        CTV (``ctv``, or ``musig2`` with the CTV leaf) and the node does not report
        ``checktemplateverify`` active: there a CTV output is anyone-can-spend (ARCHITECTURE
        invariant 4). Bitcoin Core and the kernel node report it inactive."""
        if self.listening:
            raise RuntimeError("already started")
        self.shared.halving = (
            HALVING_INTERVAL_REGTEST
            if getattr(self.node, "network", "") == "regtest"
            else HALVING_INTERVAL_MAINNET
        )
        self.ctv_active = await ctv_active_on(self.node) is True
        for p in (self.book.current, self.book.previous):
            if p is not None:
                self._check_ctv(p.mode)
        self._check_ctv(self.default_mode)
        src = self._source
        initial = src() if callable(src) else src
        if initial is not None and self.book.current is None:
            self.publish(initial)
        if self.book.current is None:
            raise ConfigError("the JDS needs a payout distribution before it can serve clients")
        await self._listen()
        if self.limits.template_refresh > 0:
            self._spawn(self._template_loop())

    def _check_ctv(self, mode: SettlementMode) -> None:
        # Before start() nobody asked the node yet: start() checks what was published.
        if self.ctv_active is not None:
            check_ctv_for(mode, self.ctv_active, "the JD server")

    # -- distributions ------------------------------------------------------------------------

    def publish(
        self,
        distribution: Distribution | FittedDistribution,
        *,
        mode: SettlementMode | None = None,
        settlement: bool = False,
    ) -> None:
        """Make ``distribution`` current and push it (SetPayoutDistribution, then
        SetSettlementMode) to every client that negotiated 0x0003 (PR #203 §3.1).
        ``settlement=True`` after a found block: no grace window for earlier distributions
        (PR #203 §10). A mode that needs CTV on a node without it raises
        :class:`~payouts.settlement.ctv.CtvNotActiveError` and publishes nothing (before
        :meth:`start`, which asks the node, :meth:`start` refuses instead); so does a mode the
        0x4003 message cannot carry (docs/extensions §6: its named error), checked by encoding
        it before anything changes."""
        fitted = distribution if isinstance(distribution, FittedDistribution) else None
        d = fitted.distribution if fitted is not None else distribution
        assert isinstance(d, Distribution)
        m = mode or self.default_mode
        self._check_ctv(m)
        mode_to_message(m, d.distribution_id)  # raises for a mode no client may accept
        self.book.publish(Published(d, fitted, m, self.clock(), settlement))
        for c in list(self._peers.values()):
            try:
                for msg in c.session.distribution_update():
                    self._write(c, msg)
            except Disconnect as exc:  # that client cannot take it: it alone goes
                log.info("JDS connection %d: %s", c.id, exc.reason)
                c.closing = True
                c.writer.transport.abort()

    @property
    def server_id(self) -> str:
        """This JD server's identity (``[jds] server_id``), bound into its tokens."""
        return self.tokens.server_id

    def declared_job(self, token: bytes) -> DeclaredJob | None:
        """The job a DeclareMiningJob.Success token names (for a pool's SetCustomMiningJob)."""
        rec = self.tokens.get(token)
        if rec is None or rec.kind != "declared" or self.clock() >= rec.expires_at:
            return None
        job: DeclaredJob | None = rec.job
        return job

    def coinbase_only_grant(self, token: bytes) -> CoinbaseOnlyGrant | None:
        """A live Coinbase-only token (AllocateMiningJobToken.Success on a connection without
        ``DECLARE_TX_DATA``, sv2-spec §6.1): its user, and whether its connection negotiated
        0x4003; None for any other token."""
        rec = self.tokens.get(token)
        if rec is None or rec.kind != "coinbase-only" or self.clock() >= rec.expires_at:
            return None
        return CoinbaseOnlyGrant(rec.user_identifier, bool(rec.extra.get("settlement_modes")))

    def spend_token(self, token: bytes) -> None:
        """Forget ``token``: the pool committed to the Coinbase-only job it named (single
        use)."""
        self.tokens.remove(token)

    @property
    def expected(self) -> ExpectedOutputs:
        """The settlement layer's output builder declarations are checked with."""
        return self.shared.expected

    @property
    def halving(self) -> int:
        """The chain's subsidy halving interval (known once :meth:`start` asked the node)."""
        return self.shared.halving

    def token_refusal(self, token: bytes) -> str | None:
        """Why ``token`` cannot name a job here when another JD server issued it (logged);
        None when it is this server's (known or not)."""
        why = self.tokens.foreign(token)
        if why is not None:
            log.warning("JDS %s: refused a token of another JD server: %s", self.server_id, why)
        return why

    # -- the node's template -------------------------------------------------------------------

    async def _template_loop(self) -> None:
        """Re-read the node's template every ``template_refresh`` s, from :meth:`start` on, so
        a declaration on the current tip never waits for a refresh (a 4,000-tx template costs
        ~100 ms of node call, wtxids and witness tree). The first template is loaded by the
        first declaration (or this loop, whichever comes first). A node error is logged and
        retried at the next interval."""
        while True:
            await asyncio.sleep(self.limits.template_refresh)
            try:
                await self.refresh_template()
            except NodeError as exc:
                self._count("template-refresh-errors")
                log.warning("JDS: template refresh failed: %s", exc.reason)
            except Exception:  # the loop must outlive a bug: declarations still load on a new tip
                self._count("template-refresh-errors")
                log.exception("JDS: template refresh failed")

    async def refresh_template(self, tip: ChainTip | None = None) -> None:
        """Load the node's current template into the transaction store. With ``tip``: only if
        the store does not hold that tip's template yet (a declaration on a new tip). One
        refresh at a time; the CPU part runs in a worker thread and the store changes at once
        (:meth:`TxStore.install_template`), so declarations in between see the old template or
        the new one, never a mix."""
        async with self._template_lock:
            st = self.txs
            if tip is not None and st.template_prev_hash == tip.block_hash:
                return  # loaded while this caller waited for the lock
            template = await self.node.block_template()
            prepared = await asyncio.to_thread(st.prepare_template, template)
            st.install_template(prepared, self.clock())

    # -- connections: drive the sessions --------------------------------------------------------

    def _identity(self) -> ServerIdentity:
        return self._identities.current()

    def _new_peer(
        self, peer_id: int, conn: Sv2Connection, writer: asyncio.StreamWriter, peer: str
    ) -> _Connection:
        return _Connection(peer_id, conn, writer, peer, session=JdsSession(peer_id, self.shared))

    def _peer_closed(self, c: _Connection) -> None:
        c.session.closed()

    def _is_set_up(self, c: _Connection, items: list[Any]) -> bool:
        return c.session.setup and not c.closing

    async def _handle_items(self, c: _Connection, items: list[Any]) -> None:
        for it in items:
            if c.closing:
                return
            if c.session.setup and isinstance(it, jd.DeclareMiningJob | jd.AllocateMiningJobToken):
                refused = await self._over_limit(c, it)
                if c.closing:  # it went while an allocation waited for the limit
                    return
                if refused is not None:
                    self._output(c, refused)
                    continue
            await self._emit(c, await self._drive(c.session.receive(it)))

    async def _over_limit(
        self, c: _Connection, msg: jd.DeclareMiningJob | jd.AllocateMiningJobToken
    ) -> jd.DeclareMiningJobError | None:
        """The source address's request limits (:class:`RequestLimits`), before the session
        sees the message. A declaration over the limit gets DeclareMiningJob.Error
        ``rate-limited`` (nothing consumed: its token stays valid); AllocateMiningJobToken has
        no error message (sv2-spec §6.4.2), so its answer waits until the limit lets it through
        (this connection's later messages wait behind it, in order)."""
        rl = self.request_limits
        limiter = rl.declarations if isinstance(msg, jd.DeclareMiningJob) else rl.tokens
        if limiter is None:
            return None
        while True:
            wait = await asyncio.to_thread(limiter.take, c.source) if limiter.shared \
                else limiter.take(c.source)
            if wait <= 0:
                return None
            if isinstance(msg, jd.DeclareMiningJob):
                c.session.count(f"declare-rejected:{E.RATE_LIMITED}")
                log.info("JDS connection %d (%s): DeclareMiningJob %d over the address's "
                         "limit; retry in %.1f s", c.id, c.source, msg.request_id, wait)
                return jd.DeclareMiningJobError(
                    request_id=msg.request_id, error_code=E.RATE_LIMITED,
                    error_details=f"over {limiter.rate:g} declarations/s from this address; "
                    f"retry in {wait:.1f} s".encode())
            c.session.count("tokens-delayed")
            await asyncio.sleep(wait)
            if c.closing:
                return None

    async def _drive(self, step: Step) -> list[Output]:
        """Run one session step to its outputs, answering its node requests."""
        out = resume(step)
        while not isinstance(out, list):
            out = resume(step, await self._perform(out))
        return out

    async def _perform(self, req: NodeRequest) -> Any:
        """The node's answer to ``req``, or the :class:`NodeError` it raised (the session
        turns it into the protocol's answer)."""
        try:
            if isinstance(req, NeedTip):
                return await self.node.tip()
            if isinstance(req, NeedTemplate):
                return await self.refresh_template(req.tip)
            if isinstance(req, NeedMempoolTxs):
                return await self.node.mempool_txs(list(req.wtxids))
            return await submit_found_block(self.node, req.raw_block, req.block_hash)
        except NodeError as exc:
            return exc

    async def _emit(self, c: _Connection, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, FoundBlock):
                await self._found(out)
            else:
                self._output(c, out)

    async def _found(self, found: FoundBlock) -> None:
        if self.on_block is None:
            return
        try:
            res = self.on_block(found)
            if inspect.isawaitable(res):
                await res
        except Exception:  # the settlement layer's failure must not drop the miner
            log.exception("JDS: on_block callback failed")


__all__ = [
    "IMPLEMENTED_EXTENSIONS",
    "BoundOutputs",
    "DeclaredJob",
    "FoundBlock",
    "JdsLimits",
    "JobDeclarationServer",
]
