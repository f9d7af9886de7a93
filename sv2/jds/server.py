"""The asyncio Job Declaration Server (sv2-spec 06-Job-Declaration-Protocol.md, Full-Template
mode) with extensions 0x0003 (PR #203), 0x4002 (the PR #202 per-job adapter) and 0x4003
(settlement modes). docs/jds.md describes the behaviour and every error code.

Sockets live in :class:`~sv2.listener.NoiseListener` (shared with the Template Provider): each
connection is a :class:`~sv2.connection.Sv2Connection` (sans-I/O) driven by one task that reads
with timeouts, feeds bytes in and writes bytes out; this module handles what it decodes.
Messages of one connection are handled one at a time, in order; connections only share the
token book, the distribution book and the transaction store, all touched synchronously between
awaits (the background template refresh prepares a template in a worker thread and installs it
in one synchronous step). Anything a peer does wrong ends *its* connection (or earns it an error
message); no exception escapes a connection task.
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
from payouts.errors import ConfigError, ValidationError
from payouts.node.interface import ChainTip, Node, NodeError
from payouts.settings import Settings
from payouts.settlement.modes import (
    ExpectedOutputs,
    SettlementMode,
    check_ctv_for,
    ctv_active_on,
    default_expected_outputs,
    mode_from_settings,
)
from payouts.tx.block import BlockHeader, check_pow
from payouts.tx.coinbase import HALVING_INTERVAL_MAINNET, HALVING_INTERVAL_REGTEST, block_subsidy
from payouts.tx.compact import ser_compact_size
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import Tx, TxDecodeError
from payouts.tx.txout import MAX_MONEY, TxOut
from sv2.authority import decode_authority_secret_key
from sv2.connection import (
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_FRAME_SIZE,
    JD_FRAME_LIMITS,
    HandshakeComplete,
    MalformedMessage,
    Sv2Connection,
    UnknownMessage,
)
from sv2.domain_messages import distribution_message, mode_to_message
from sv2.jds import errors as E
from sv2.jds.errors import JobRejected
from sv2.jds.state import DistributionBook, Published, TxStore
from sv2.jds.tokens import TokenBook, TokenRecord
from sv2.jds.validation import (
    DeclaredCoinbase,
    KnownTx,
    PayoutRule,
    ValidatedDeclaration,
    check_height,
    check_wtxid_list,
    parse_declared_coinbase,
    validate_declaration,
)
from sv2.jds.version_bits import version_matches
from sv2.listener import Disconnect, ListenerLimits, NoiseListener, Peer
from sv2.messages.base import Message
from sv2.messages.common import (
    JD_FLAG_DECLARE_TX_DATA,
    PROTOCOL_JOB_DECLARATION,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.messages.extensions import (
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
)
from sv2.messages.job_declaration import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    PushSolution,
)
from sv2.messages.payouts import (
    EXT_NON_CUSTODIAL_PAYOUTS,
    EXT_PER_JOB_PAYOUTS,
    RequestPayoutOutputs,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
    distribution_id_of,
)
from sv2.messages.settlement import EXT_SETTLEMENT_MODES
from sv2.noise import ServerIdentity
from sv2.noise_transport import FrameLimits

log = logging.getLogger(__name__)

IMPLEMENTED_EXTENSIONS = (EXT_NON_CUSTODIAL_PAYOUTS, EXT_PER_JOB_PAYOUTS, EXT_SETTLEMENT_MODES)
SV2_VERSION = 2


@dataclass(frozen=True, slots=True)
class JdsLimits(ListenerLimits):
    """Per-connection limits and timeouts (seconds), and the server's own."""

    handshake_timeout: float = 10.0
    idle_timeout: float | None = 300.0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_buffered: int = DEFAULT_MAX_BUFFERED
    max_write_buffer: int | None = 8 << 20  # a peer that does not read loses its connection
    max_connections: int = 1_000
    # ProvideMissingTransactions.Success alone may carry a whole block (BLOCK_TXS_FRAME_SIZE).
    frame_limits: FrameLimits = field(default_factory=lambda: JD_FRAME_LIMITS)
    grace_period: float = 10.0  # PR #203 §7.2 grace window for the previous distribution
    template_refresh: float = 5.0  # re-read the node's template this often, in the background


@dataclass(frozen=True, slots=True)
class BoundOutputs:
    """A PR #202 output set, bound to one allocated token (single use)."""

    value: int
    outputs: tuple[TxOut, ...]
    distribution_id: int
    mode: str


@dataclass(frozen=True, slots=True)
class DeclaredJob:
    """An accepted declaration: everything PushSolution needs to rebuild the block."""

    connection_id: int
    request_id: int
    token: bytes  # the DeclareMiningJob.Success token naming this job
    user_identifier: str
    prev_hash: bytes
    bits: int
    version: int  # DeclareMiningJob.version; SetCustomMiningJob may differ in BIP323 bits only
    height: int
    coinbase: DeclaredCoinbase
    txs: tuple[KnownTx, ...]
    revenue: int
    payout_outputs: tuple[TxOut, ...]
    distribution_id: int | None
    mode: str  # "coinbase" | "ctv" | "musig2" | "per-job" | "pool" (base spec)
    distribution: Distribution | None
    fitted: FittedDistribution | None


@dataclass(frozen=True, slots=True)
class FoundBlock:
    """Passed to ``on_block`` when the node accepted a block rebuilt from a PushSolution."""

    block_hash: bytes  # internal byte order
    height: int
    raw_block: bytes
    coinbase: Tx
    job: DeclaredJob

    @property
    def distribution_id(self) -> int | None:
        return self.job.distribution_id

    @property
    def revenue(self) -> int:
        return self.job.revenue


OnBlock = Callable[[FoundBlock], Awaitable[None] | None]
DistributionSource = Callable[[], Distribution | FittedDistribution | None]


@dataclass(slots=True)
class _Pending:
    """A declaration waiting for ProvideMissingTransactions.Success."""

    msg: DeclareMiningJob
    token: TokenRecord
    rule: PayoutRule
    published: Published | None
    mode: str
    coinbase: DeclaredCoinbase
    tip: ChainTip
    height: int
    resolved: list[KnownTx | None]
    missing: list[int]  # positions into wtxid_list


@dataclass(slots=True)
class _Session(Peer):
    setup: bool = False
    ext_state: str = "none"  # none | retry | done
    negotiated: frozenset[int] = frozenset()
    pending: _Pending | None = None
    latest_job: DeclaredJob | None = None
    stats: dict[str, int] = field(default_factory=dict)


class JobDeclarationServer(NoiseListener[_Session]):
    """JD server. ``distribution_source`` is read once at :meth:`start` (a distribution is
    needed before any client can be served: even base-spec clients get the pool payout script
    from it); later changes go through :meth:`publish`."""

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
        limits: JdsLimits | None = None,
        mode: SettlementMode | None = None,
        expected_outputs: ExpectedOutputs | None = None,
        on_block: OnBlock | None = None,
        clock: Callable[[], float] = time.monotonic,
        authority_secret_key: bytes | None = None,
        cert_validity: int = 3600,
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
        self.identity = identity
        self.node = node
        self.supported = tuple(dict.fromkeys(supported_extensions))
        self.required = tuple(dict.fromkeys(required_extensions))
        self.limits = lim
        self.default_mode = mode or SettlementMode()
        self._expected_custom = expected_outputs
        self.on_block = on_block
        self.clock = clock
        self.tokens = TokenBook(token_lifetime)
        self.book = DistributionBook(self.limits.grace_period)
        self.txs = TxStore()
        self._source = distribution_source
        self._authority_sk = authority_secret_key
        self._cert_validity = cert_validity
        self.found_blocks: list[FoundBlock] = []
        self._template_lock = asyncio.Lock()
        self._halving = HALVING_INTERVAL_MAINNET
        # The node's answer to "is BIP-119 enforced?", asked in start(); None before.
        self.ctv_active: bool | None = None

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
        """Build from :class:`payouts.settings.Settings` (``[jds]``); ``mode`` defaults to
        :func:`~payouts.settlement.modes.mode_from_settings` (``payouts serve`` passes the one
        object its settlement runner uses). The certificate is signed with
        ``jds.authority_secret_key`` and re-signed when half of ``cert_validity_sec`` has
        passed."""
        jds = settings.jds
        sk = None
        if identity is None:
            if not jds.authority_secret_key:
                raise ConfigError("jds.authority_secret_key is required to serve Noise")
            sk = decode_authority_secret_key(jds.authority_secret_key)
            identity = ServerIdentity.signed_by(sk, validity_s=jds.cert_validity_sec)
        host, _, port = jds.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"jds.listen must be host:port, got {jds.listen!r}")
        return cls(
            identity=identity,
            node=node,
            distribution_source=distribution_source,
            host=host.strip("[]"),
            port=int(port),
            supported_extensions=[
                e for e in jds.supported_extensions if e in IMPLEMENTED_EXTENSIONS
            ],
            required_extensions=jds.required_extensions,
            token_lifetime=jds.token_lifetime_sec,
            mode=mode if mode is not None else mode_from_settings(settings),
            authority_secret_key=sk,
            cert_validity=jds.cert_validity_sec,
            **kwargs,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Ask the node whether CTV is enforced, publish the first distribution, listen.

        Raises :class:`~payouts.settlement.ctv.CtvNotActiveError` (nothing listens, nothing
        published) when the default mode or a distribution published before ``start`` needs
        CTV (``ctv``, or ``musig2`` with the CTV leaf) and the node does not report
        ``checktemplateverify`` active: there a CTV output is anyone-can-spend (ARCHITECTURE
        invariant 4). Bitcoin Core and the kernel node report it inactive."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._halving = (
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

    def _count(self, key: str, s: _Session | None = None) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1
        if s is not None:
            s.stats[key] = s.stats.get(key, 0) + 1

    # -- distributions ------------------------------------------------------------------------

    def _expected(self, mode: SettlementMode, d: Distribution, revenue: int) -> Sequence[TxOut]:
        if self._expected_custom is not None:
            return self._expected_custom(mode, d, revenue)
        return default_expected_outputs(mode, d, revenue)

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
        :meth:`start`, which asks the node, :meth:`start` refuses instead)."""
        fitted = distribution if isinstance(distribution, FittedDistribution) else None
        d = fitted.distribution if fitted is not None else distribution
        assert isinstance(d, Distribution)
        m = mode or self.default_mode
        self._check_ctv(m)
        self.book.publish(Published(d, fitted, m, self.clock(), settlement))
        for s in list(self._peers.values()):
            if EXT_NON_CUSTODIAL_PAYOUTS in s.negotiated:
                try:
                    self._push_distribution(s)
                except Disconnect as exc:  # that client cannot take it: it alone goes
                    log.info("JDS connection %d: %s", s.id, exc.reason)
                    s.closing = True
                    s.writer.transport.abort()

    def _push_distribution(self, s: _Session) -> None:
        cur = self.book.current
        if cur is None:
            return
        self._write(s, distribution_message(cur.distribution))
        if EXT_SETTLEMENT_MODES in s.negotiated:
            self._write(s, mode_to_message(cur.mode, cur.distribution_id))

    # -- connections --------------------------------------------------------------------------

    def _identity(self) -> ServerIdentity:
        """Re-sign the certificate when half its validity has passed (SRI signs per
        connection; re-signing periodically keeps the cost off the handshake path)."""
        sk = self._authority_sk
        if sk is not None:
            cert = self.identity.certificate
            if time.time() > cert.valid_from + (cert.not_valid_after - cert.valid_from) / 2:
                self.identity = ServerIdentity.signed_by(
                    sk, static_key=self.identity.static_key, validity_s=self._cert_validity
                )
        return self.identity

    name = "JDS"
    log = logging.getLogger(__name__)

    def _new_peer(
        self, peer_id: int, conn: Sv2Connection, writer: asyncio.StreamWriter, peer: str
    ) -> _Session:
        return _Session(peer_id, conn, writer, peer)

    def _peer_closed(self, s: _Session) -> None:
        self.tokens.drop_owner(s.id)  # SRI drops a connection's tokens on disconnect too

    async def _handle_items(self, s: _Session, items: list[Any]) -> None:
        for it in items:
            if s.closing:
                return
            if isinstance(it, UnknownMessage):
                # sv2-spec §3.4: a non-channel message of an unknown extension is discarded.
                self._count("unknown-messages", s)
                continue
            if isinstance(it, MalformedMessage):
                raise Disconnect(f"malformed {it.frame.msg_type:#04x}: {it.error.reason}")
            if isinstance(it, HandshakeComplete):
                continue
            await self._dispatch(s, it)

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, s: _Session, msg: Message) -> None:
        if not s.setup:
            if not isinstance(msg, SetupConnection):
                raise Disconnect(f"{msg.NAME} before SetupConnection")
            self._on_setup(s, msg)
            return
        if isinstance(msg, SetupConnection):
            raise Disconnect("second SetupConnection")
        if isinstance(msg, RequestExtensions):
            self._on_request_extensions(s, msg)
            return
        if s.ext_state == "retry" or (s.ext_state == "none" and self.required):
            # 0x0001 §4.6: a client that does not (re)request the required extensions MUST
            # be disconnected.
            raise Disconnect(f"{msg.NAME} without negotiating the required extensions")
        if s.ext_state == "none":
            s.ext_state = "done"  # a client that skips negotiation gets no extension
        if isinstance(msg, AllocateMiningJobToken):
            self._on_allocate(s, msg)
        elif isinstance(msg, DeclareMiningJob):
            await self._on_declare(s, msg)
        elif isinstance(msg, ProvideMissingTransactionsSuccess):
            await self._on_provided(s, msg)
        elif isinstance(msg, PushSolution):
            await self._on_push_solution(s, msg)
        elif isinstance(msg, RequestPayoutOutputs):
            if EXT_PER_JOB_PAYOUTS not in s.negotiated:
                self._count("ignored-not-negotiated", s)  # 0x0001: not to be used; discard
                return
            self._on_request_payout_outputs(s, msg)
        else:
            raise Disconnect(f"{msg.NAME} is not a message a JD client sends")

    def _on_setup(self, s: _Session, msg: SetupConnection) -> None:
        """sv2-spec §3.6 / SRI JDS: protocol JD, version 2 in range, DECLARE_TX_DATA set
        (Full-Template only, as SRI); any other flag bit is unsupported."""
        error: tuple[int, str] | None = None
        if msg.protocol != PROTOCOL_JOB_DECLARATION:
            error = (0, E.SETUP_UNSUPPORTED_PROTOCOL)
        elif not msg.min_version <= SV2_VERSION <= msg.max_version:
            error = (0, E.SETUP_VERSION_MISMATCH)
        elif msg.flags & ~JD_FLAG_DECLARE_TX_DATA:
            error = (msg.flags & ~JD_FLAG_DECLARE_TX_DATA, E.SETUP_UNSUPPORTED_FLAGS)
        elif not msg.flags & JD_FLAG_DECLARE_TX_DATA:
            error = (0, E.SETUP_MISSING_DECLARE_TX_DATA)  # flags 0, as SRI's JDS sends
        if error is not None:
            self._count(f"setup-error:{error[1]}", s)
            self._write(s, SetupConnectionError(flags=error[0], error_code=error[1]))
            s.closing = True  # SRI disconnects after SetupConnection.Error
            return
        s.setup = True
        self._write(s, SetupConnectionSuccess(used_version=SV2_VERSION, flags=0))

    def _on_request_extensions(self, s: _Session, msg: RequestExtensions) -> None:
        if s.ext_state == "done":
            raise Disconnect("extensions negotiated twice")
        requested = list(dict.fromkeys(msg.requested_extensions))
        ok = [e for e in requested if e in self.supported]
        if EXT_SETTLEMENT_MODES in ok and EXT_NON_CUSTODIAL_PAYOUTS not in ok:
            ok.remove(EXT_SETTLEMENT_MODES)  # 0x4003 refers to 0x0003 distributions
        missing = [e for e in self.required if e not in requested]
        unsupported = [e for e in requested if e not in ok]
        if missing or (requested and not ok):
            self._write(
                s,
                RequestExtensionsError(
                    request_id=msg.request_id,
                    unsupported_extensions=tuple(unsupported),
                    required_extensions=tuple(missing),
                ),
            )
            if missing:
                if s.ext_state == "retry":
                    s.closing = True  # retried and still without them
                s.ext_state = "retry"
            else:
                s.ext_state = "done"
            return
        s.ext_state = "done"
        s.negotiated = frozenset(ok)
        self._write(
            s, RequestExtensionsSuccess(request_id=msg.request_id, supported_extensions=tuple(ok))
        )
        if EXT_NON_CUSTODIAL_PAYOUTS in s.negotiated:
            self._push_distribution(s)  # PR #203 §3.1: the first message after the negotiation

    def _on_allocate(self, s: _Session, msg: AllocateMiningJobToken) -> None:
        rec = self.tokens.issue(
            s.id, "allocated", self.clock(), user_identifier=msg.user_identifier
        )
        if EXT_NON_CUSTODIAL_PAYOUTS in s.negotiated:
            outputs = ser_compact_size(0)  # PR #203 §2: empty (an empty output vector)
        else:
            cur = self.book.current
            assert cur is not None
            pool = TxOut(0, cur.distribution.pool_payout.script)  # §6.4.3: value 0
            outputs = ser_compact_size(1) + pool.serialize()
        self._count("tokens-allocated", s)
        self._write(
            s,
            AllocateMiningJobTokenSuccess(
                request_id=msg.request_id, mining_job_token=rec.token, coinbase_tx_outputs=outputs
            ),
        )

    # -- PR #202 per-job adapter --------------------------------------------------------------

    def _on_request_payout_outputs(self, s: _Session, msg: RequestPayoutOutputs) -> None:
        try:
            rec = self.tokens.peek(msg.mining_job_token, s.id, "allocated", self.clock())
            if rec.bound_outputs is not None:
                raise JobRejected(E.PAYOUT_OUTPUTS_ALREADY_REQUESTED)
            cur = self.book.current
            if cur is None:
                raise JobRejected(E.NO_PAYOUT_DISTRIBUTION)
            value = msg.available_payout_value
            if not 0 < value <= MAX_MONEY:
                raise JobRejected(E.INVALID_PAYOUT_VALUE, f"{value} sat")
            try:
                outs = tuple(self._expected(cur.mode, cur.distribution, value))
            except ValidationError as exc:
                raise JobRejected(E.INVALID_PAYOUT_VALUE, exc.message) from None
        except JobRejected as exc:
            self._count(f"payout-outputs-error:{exc.code}", s)
            self._write(
                s, RequestPayoutOutputsError(request_id=msg.request_id, error_code=exc.code)
            )
            return
        rec.bound_outputs = BoundOutputs(value, outs, cur.distribution_id, cur.mode.name)
        raw = ser_compact_size(len(outs)) + b"".join(o.serialize() for o in outs)
        self._write(
            s, RequestPayoutOutputsSuccess(request_id=msg.request_id, coinbase_tx_outputs=raw)
        )

    # -- DeclareMiningJob ---------------------------------------------------------------------

    def _payout_rule(
        self, s: _Session, msg: DeclareMiningJob, rec: TokenRecord, now: float
    ) -> tuple[PayoutRule, Published | None, str]:
        tlv_id = distribution_id_of(msg)
        bound: BoundOutputs | None = rec.bound_outputs
        if bound is not None:
            if tlv_id is not None and tlv_id != bound.distribution_id:
                raise JobRejected(
                    E.INVALID_PAYOUT_OUTPUTS,
                    f"distribution_id {tlv_id} differs from the requested set's "
                    f"{bound.distribution_id}",
                )
            try:
                published = self.book.lookup(bound.distribution_id, now)
            except JobRejected:
                raise JobRejected(
                    E.STALE_PAYOUT_OUTPUTS, "the distribution behind this output set expired"
                ) from None
            outs = bound.outputs
            rule = PayoutRule(
                E.INVALID_PAYOUT_OUTPUTS,
                lambda _t: outs,
                "per-job payout outputs",
                fixed_revenue=bound.value,
            )
            return rule, published, "per-job"
        if EXT_NON_CUSTODIAL_PAYOUTS in s.negotiated:
            if tlv_id is None:
                raise JobRejected(
                    E.INVALID_PAYOUT_DISTRIBUTION,
                    "0x0003 is negotiated: DeclareMiningJob needs the distribution_id TLV",
                )
            p = self.book.lookup(tlv_id, now)
            if p.mode.name != "coinbase" and EXT_SETTLEMENT_MODES not in s.negotiated:
                raise JobRejected(
                    E.SETTLEMENT_MODE_NOT_NEGOTIATED,
                    f"distribution {tlv_id} settles in {p.mode.name} mode; negotiate 0x4003",
                )
            code = (
                E.INVALID_PAYOUT_DISTRIBUTION
                if p.mode.name == "coinbase"
                else E.INVALID_SETTLEMENT_OUTPUTS
            )

            def expected(t: int, p: Published = p) -> Sequence[TxOut]:
                return self._expected(p.mode, p.distribution, t)

            return (
                PayoutRule(code, expected, f"distribution {tlv_id} ({p.mode.name})"),
                p,
                p.mode.name,
            )
        if tlv_id is not None:
            raise JobRejected(
                E.EXTENSION_NOT_NEGOTIATED,
                "distribution_id TLV from a client that did not negotiate 0x0003 (PR #203 §2)",
            )
        cur = self.book.current
        assert cur is not None
        script = cur.distribution.pool_payout.script

        def pool_only(t: int) -> Sequence[TxOut]:
            return (TxOut(t, script),)

        return PayoutRule(E.INVALID_POOL_PAYOUT, pool_only, "pool payout (base spec)"), None, "pool"

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

    async def _resolve(self, wtxids: Sequence[bytes]) -> tuple[list[KnownTx | None], list[int]]:
        resolved: list[KnownTx | None] = list(map(self.txs.by_wtxid.get, wtxids))
        missing = [i for i, k in enumerate(resolved) if k is None]
        if missing:
            found = await self.node.mempool_txs([wtxids[i] for i in missing])
            still = []
            for i, tx in zip(missing, found, strict=True):
                if tx is None or tx.wtxid != wtxids[i]:
                    still.append(i)
                    continue
                k = KnownTx.of(tx, fee=self.txs.derive_fee(tx))
                self.txs.add(k)
                resolved[i] = k
            missing = still
        return resolved, missing

    def _reject(self, s: _Session, request_id: int, exc: JobRejected) -> None:
        self._count(f"declare-rejected:{exc.code}", s)
        log.info("JDS connection %d: DeclareMiningJob %d rejected: %s", s.id, request_id, exc)
        details = exc.details.encode("utf-8")[:0xFFFF]
        self._write(
            s,
            DeclareMiningJobError(
                request_id=request_id, error_code=exc.code, error_details=details
            ),
        )

    async def _on_declare(self, s: _Session, msg: DeclareMiningJob) -> None:
        if s.pending is not None:
            old = s.pending
            s.pending = None
            self._reject(
                s, old.msg.request_id, JobRejected(E.JOB_SUPERSEDED, "a newer declaration")
            )
        now = self.clock()
        try:
            rec = self.tokens.consume(msg.mining_job_token, s.id, "allocated", now)
            rule, published, mode = self._payout_rule(s, msg, rec, now)
            coinbase = parse_declared_coinbase(msg.coinbase_tx_prefix, msg.coinbase_tx_suffix)
            check_wtxid_list(msg.wtxid_list)
            tip = await self.node.tip()
            height = check_height(coinbase, tip.height)
            if self.txs.template_prev_hash != tip.block_hash:
                # A new tip (or none loaded yet): the store still holds the txs the last block
                # mined, so this declaration waits for the new template, as it always did. On
                # the current tip the background refresh keeps the store fresh.
                await self.refresh_template(tip)
            resolved, missing = await self._resolve(msg.wtxid_list)
        except JobRejected as exc:
            self._reject(s, msg.request_id, exc)
            return
        except NodeError as exc:
            self._reject(s, msg.request_id, JobRejected(E.INTERNAL_ERROR, f"node: {exc.reason}"))
            return
        pending = _Pending(
            msg, rec, rule, published, mode, coinbase, tip, height, resolved, missing
        )
        if missing:
            s.pending = pending
            self._count("missing-tx-requests", s)
            self._write(
                s,
                ProvideMissingTransactions(
                    request_id=msg.request_id, unknown_tx_position_list=tuple(missing)
                ),
            )
            return
        self._finish(s, pending, [])

    async def _on_provided(self, s: _Session, msg: ProvideMissingTransactionsSuccess) -> None:
        p = s.pending
        if p is None or msg.request_id != p.msg.request_id:
            # A late answer for a superseded job (stratum #860): nothing to do.
            self._count("stale-provided-txs", s)
            return
        s.pending = None
        try:
            staged = self._check_provided(p, msg.transaction_list)
            tip = await self.node.tip()
            if tip.block_hash != p.tip.block_hash:
                raise JobRejected(E.STALE_CHAIN_TIP, "the tip moved while transactions were sent")
        except JobRejected as exc:
            self._reject(s, p.msg.request_id, exc)
            return
        except NodeError as exc:
            self._reject(s, p.msg.request_id, JobRejected(E.INTERNAL_ERROR, f"node: {exc.reason}"))
            return
        self._finish(s, p, staged)

    def _check_provided(self, p: _Pending, raw_txs: Sequence[bytes]) -> list[KnownTx]:
        """SRI v32x hardening: supplied txs must parse, not be coinbases, be among the
        requested positions, and not repeat; every requested one must come."""
        wanted = {p.msg.wtxid_list[i]: i for i in p.missing}
        got: dict[bytes, Tx] = {}
        for n, raw in enumerate(raw_txs):
            try:
                tx = Tx.parse(raw)
            except (TxDecodeError, ValueError) as exc:
                raise JobRejected(E.INVALID_PROVIDED_TXS, f"transaction {n}: {exc}") from None
            if tx.is_coinbase:
                raise JobRejected(E.COINBASE_TX_PROVIDED, f"transaction {n} is a coinbase")
            w = tx.wtxid
            if w in got:
                raise JobRejected(
                    E.DUPLICATE_PROVIDED_TX, f"transaction {n} repeats an earlier one"
                )
            if w not in wanted:
                raise JobRejected(E.UNDECLARED_TX, f"transaction {n} was not requested")
            got[w] = tx
        absent = [i for w, i in wanted.items() if w not in got]
        if absent:
            raise JobRejected(E.MISSING_TXS, f"positions {absent[:10]} were not provided")
        # Fees: parents may be other txs of this job.
        local = {k.txid: k.tx for k in p.resolved if k is not None}
        local.update((tx.txid, tx) for tx in got.values())
        staged = []
        for w, i in wanted.items():
            tx = got[w]
            k = KnownTx.of(tx, fee=self.txs.derive_fee(tx, local))
            p.resolved[i] = k
            staged.append(k)
        return staged

    def _finish(self, s: _Session, p: _Pending, staged: list[KnownTx]) -> None:
        txs = [k for k in p.resolved if k is not None]
        assert len(txs) == len(p.resolved)
        try:
            v = validate_declaration(
                p.coinbase,
                txs,
                height=p.height,
                subsidy=block_subsidy(p.height, self._halving),
                rule=p.rule,
                trees=self.txs.trees,
            )
        except JobRejected as exc:
            self._reject(s, p.msg.request_id, exc)
            return
        self._accept(s, p, v, txs, staged)

    def _accept(
        self,
        s: _Session,
        p: _Pending,
        v: ValidatedDeclaration,
        txs: list[KnownTx],
        staged: list[KnownTx],
    ) -> None:
        now = self.clock()
        rec = self.tokens.issue(s.id, "declared", now, user_identifier=p.token.user_identifier)
        pub = p.published
        job = DeclaredJob(
            connection_id=s.id,
            request_id=p.msg.request_id,
            token=rec.token,
            user_identifier=p.token.user_identifier,
            prev_hash=p.tip.block_hash,
            bits=p.tip.bits,
            version=p.msg.version,
            height=v.height,
            coinbase=v.coinbase,
            txs=tuple(txs),
            revenue=v.revenue,
            payout_outputs=v.payout_outputs,
            distribution_id=pub.distribution_id if pub is not None else None,
            mode=p.mode,
            distribution=pub.distribution if pub is not None else None,
            fitted=pub.fitted if pub is not None else None,
        )
        rec.job = job
        s.latest_job = job
        self.txs.add_all(staged)  # v32x: commit supplied txs only after validation passed
        self._count("declare-accepted", s)
        self._write(
            s, DeclareMiningJobSuccess(request_id=p.msg.request_id, new_mining_job_token=rec.token)
        )

    def declared_job(self, token: bytes) -> DeclaredJob | None:
        """The job a DeclareMiningJob.Success token names (for a pool's SetCustomMiningJob)."""
        rec = self.tokens.get(token)
        if rec is None or rec.kind != "declared" or self.clock() >= rec.expires_at:
            return None
        job: DeclaredJob | None = rec.job
        return job

    # -- PushSolution -------------------------------------------------------------------------

    async def _on_push_solution(self, s: _Session, msg: PushSolution) -> None:
        """§6.4.9: rebuild the block of the most recent accepted declaration on this
        connection and submit it. There is no error message for PushSolution: problems are
        counted and logged."""
        job = s.latest_job
        if job is None:
            self._count("solution-without-job", s)
            return
        if msg.prev_hash != job.prev_hash or msg.nbits != job.bits:
            self._count("solution-mismatch", s)
            log.info("JDS connection %d: PushSolution for another tip/target", s.id)
            return
        if len(msg.extranonce) != job.coinbase.extranonce_size:
            self._count("solution-bad-extranonce", s)
            return
        if not version_matches(job.version, msg.version):
            # The miner may roll the BIP323 general-purpose bits only (sv2-spec §5.3.18, the
            # same rule as SetCustomMiningJob): other bits are not the job that was declared.
            self._count("solution-bad-version", s)
            log.info(
                "JDS connection %d: PushSolution version %#010x differs from the declared "
                "%#010x outside the BIP323 general-purpose bits",
                s.id,
                msg.version,
                job.version,
            )
            return
        raw_cb = job.coinbase.with_extranonce(msg.extranonce)
        coinbase = Tx.parse(raw_cb)
        root = merkle_root([coinbase.txid, *(k.txid for k in job.txs)])
        # BlockHeader.serialize writes version & 0xFFFFFFFF, so the U32 goes in unchanged.
        header = BlockHeader(msg.version, job.prev_hash, root, msg.ntime, msg.nbits, msg.nonce)
        block_hash = header.hash
        try:
            ok = check_pow(block_hash, msg.nbits)
        except ValueError:
            ok = False
        if not ok:
            self._count("solution-bad-pow", s)
            return
        raw = b"".join(
            [
                header.serialize(),
                ser_compact_size(len(job.txs) + 1),
                raw_cb,
                *(k.tx.serialize() for k in job.txs),
            ]
        )
        try:
            reason = await self.node.submit_block(raw)
        except NodeError as exc:
            reason = f"node error: {exc.reason}"
        if reason is not None:
            self._count("blocks-rejected", s)
            log.warning("JDS: block %s rejected by the node: %s", block_hash[::-1].hex(), reason)
            return
        self._count("blocks-found", s)
        found = FoundBlock(block_hash, job.height, raw, coinbase, job)
        self.found_blocks.append(found)
        if self.on_block is not None:
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
