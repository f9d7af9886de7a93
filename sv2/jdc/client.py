"""The asyncio Job Declaration client (sv2-spec 06-Job-Declaration-Protocol.md, Full-Template
mode) with extensions 0x0003 (PR #203), 0x4003 (settlement modes) and 0x4002 (the PR #202
per-job adapter). docs/jdc.md shows it from a miner's side.

Layering as h11: the socket lives here; bytes go through a sans-I/O
:class:`~sv2.connection.Sv2Connection` (Noise NX, authority key checked in the handshake). One
reader task decodes every frame and dispatches it: pushed messages (SetPayoutDistribution,
SetSettlementMode, ProvideMissingTransactions) are handled at once, responses resolve the
future of the request with the same ``request_id``.

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
   persists); anything else fires the ``fallback`` event (sv2-spec §6.4.5: fall back to
   another pool or solo mining) and raises :class:`DeclarationRejected`;
6. ``PushSolution`` for the job once mined (§6.4.9).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from payouts.distribution.fitting import Budget
from payouts.distribution.model import Distribution, TxOut
from payouts.errors import PayoutsError, ValidationError
from sv2.connection import (
    ConnectionFailed,
    HandshakeComplete,
    MalformedMessage,
    Sv2Connection,
    UnknownMessage,
)
from sv2.jdc.constraints import OutputConstraints, constraints_for
from sv2.jdc.jobs import (
    DEFAULT_EXTRANONCE_SIZE,
    DEFAULT_TAG,
    JobCoinbase,
    Solution,
    build_job_coinbase,
    build_outputs_coinbase,
    parse_output_vector,
)
from sv2.jdc.template import JobTemplate
from sv2.jds.modes import ExpectedOutputs, SettlementMode
from sv2.jds.state import distribution_from_message
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
    ERR_STALE_PAYOUT_DISTRIBUTION,
    EXT_NON_CUSTODIAL_PAYOUTS,
    EXT_PER_JOB_PAYOUTS,
    DistributionIdTlv,
    RequestPayoutOutputs,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
    SetPayoutDistribution,
)
from sv2.messages.settlement import EXT_SETTLEMENT_MODES, SetSettlementMode
from sv2.messages.template_distribution import CoinbaseOutputConstraints

log = logging.getLogger(__name__)

READ_CHUNK = 65_536
SV2_VERSION = 2
DEFAULT_EXTENSIONS = (EXT_NON_CUSTODIAL_PAYOUTS, EXT_SETTLEMENT_MODES)

T = TypeVar("T")


# -- errors and events ------------------------------------------------------------------------


class JdcError(PayoutsError):
    """The JD client cannot go on; ``code`` says why."""

    code = "jdc-error"


class SetupRejected(JdcError):
    """SetupConnection.Error or RequestExtensions.Error from the server."""

    code = "jdc-setup-rejected"


class JdcTimeout(JdcError):
    """The server did not answer in time."""

    code = "jdc-timeout"


class JdcConnectionLost(JdcError):
    """The connection ended (EOF, socket error or a Noise failure)."""

    code = "jdc-connection-lost"


@dataclass(frozen=True, slots=True)
class FallbackEvent:
    """Why the client gave up on the pool for a template: sv2-spec §6.4.5, "should trigger
    fallback to another pool+JDS or to solo mining". ``coinbase`` is what was declared (a solo
    miner can still mine ``template`` with a coinbase of its own)."""

    code: str
    details: str
    template: JobTemplate
    coinbase: JobCoinbase | None
    distribution_id: int | None
    attempts: int


class DeclarationRejected(JdcError):
    """The declaration failed for good; the fallback event has fired."""

    code = "jdc-declaration-rejected"

    def __init__(self, event: FallbackEvent) -> None:
        super().__init__(f"{event.code}: {event.details}" if event.details else event.code)
        self.event = event


@dataclass(frozen=True, slots=True)
class DeclaredJob:
    """A job the JDS accepted (DeclareMiningJob.Success)."""

    request_id: int
    token: bytes  # new_mining_job_token (what SetCustomMiningJob would carry)
    template: JobTemplate
    coinbase: JobCoinbase
    distribution_id: int | None
    mode: str
    attempts: int  # declarations it took (> 1 after stale-payout-distribution)

    @property
    def payout_outputs(self) -> tuple[TxOut, ...]:
        return self.coinbase.payout_outputs


OnFallback = Callable[[FallbackEvent], Awaitable[None] | None]
OnConstraints = Callable[[OutputConstraints], Awaitable[None] | None]
Progress = Callable[[str], None]


@dataclass(slots=True)
class _Outstanding:
    """A DeclareMiningJob in flight: its transactions answer ProvideMissingTransactions."""

    msg: DeclareMiningJob
    transactions: tuple[bytes, ...]
    missing_requests: int = 0
    provided: list[int] = field(default_factory=list)


class JobDeclarationClient:
    """A JD client connection. Use ``async with JobDeclarationClient(...) as c`` or
    :meth:`connect` / :meth:`close`.

    ``authority_pubkey``: the pool's 32-byte x-only authority key (``None`` skips the check:
    encrypted but unauthenticated -- only for tests). ``extensions``: requested in order;
    0x4003 needs 0x0003. ``expected_outputs``: the same callable the server was given for
    modes without a built-in rule (musig2). ``budget``: refuse to build a coinbase whose
    payout outputs exceed it (the constraints the TP got).
    """

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
    ) -> None:
        self.host, self.port = host, port
        self.authority_pubkey = authority_pubkey
        self.requested_extensions = tuple(dict.fromkeys(extensions))
        self.user_identifier = user_identifier
        self.timeout = timeout
        self.distribution_timeout = distribution_timeout
        self.extranonce_size = extranonce_size
        self.tag = tag
        self.expected_outputs = expected_outputs
        self.budget = budget
        self.max_redeclare = max_redeclare
        self.on_fallback = on_fallback
        self.on_constraints = on_constraints
        self._progress = progress
        self.vendor = vendor

        self.negotiated: frozenset[int] = frozenset()
        self.distribution: Distribution | None = None
        self.previous_distribution: Distribution | None = None
        self.modes: dict[int, SettlementMode] = {}
        self.constraints: OutputConstraints | None = None
        self.fallback = asyncio.Event()
        self.fallback_events: list[FallbackEvent] = []
        self.stats: dict[str, int] = {}

        self._conn: Sv2Connection | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._futures: dict[tuple[str, int], asyncio.Future[Message]] = {}
        self._outstanding: dict[int, _Outstanding] = {}
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._closed_reason: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> JobDeclarationClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _say(self, line: str) -> None:
        log.info("%s", line)
        if self._progress is not None:
            self._progress(line)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    async def connect(self) -> None:
        """Connect, handshake, SetupConnection, negotiate extensions and (with 0x0003) wait for
        the first distribution. Raises :class:`SetupRejected`, :class:`JdcTimeout`,
        :class:`JdcConnectionLost` or a :class:`~sv2.connection.HandshakeFailed` (wrong
        authority key, expired certificate)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise JdcConnectionLost(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._reader, self._writer = reader, writer
        self._conn = Sv2Connection.client(self.authority_pubkey)
        writer.write(self._conn.initiate())
        leftover = await self._handshake()
        self._say(f"noise handshake done with {self.host}:{self.port} (authority key checked)")
        self._task = asyncio.create_task(self._read_loop(), name="jdc-reader")
        setup_fut = self._expect("setup", 0)
        if leftover:
            await self._dispatch_all(leftover)
        self._send(
            SetupConnection(
                protocol=PROTOCOL_JOB_DECLARATION,
                min_version=SV2_VERSION,
                max_version=SV2_VERSION,
                flags=JD_FLAG_DECLARE_TX_DATA,
                endpoint_host=self.host,
                endpoint_port=self.port,
                vendor=self.vendor,
                hardware_version="",
                firmware="",
                device_id=self.user_identifier[:255],
            )
        )
        reply = await self._wait(setup_fut, "SetupConnection")
        if isinstance(reply, SetupConnectionError):
            raise SetupRejected(
                f"SetupConnection.Error {reply.error_code} (flags {reply.flags:#x})",
                code=f"setup-{reply.error_code}",
            )
        assert isinstance(reply, SetupConnectionSuccess)
        self._say(f"SetupConnection.Success: version {reply.used_version}, flags {reply.flags:#x}")
        if self.requested_extensions:
            await self._negotiate()
        if EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated:
            d = await self.wait_for_distribution(timeout=self.distribution_timeout)
            c = self.constraints
            assert c is not None
            self._say(
                f"distribution {d.distribution_id} ({self.mode_for(d.distribution_id).name}): "
                f"{len(d.payouts)} payees; CoinbaseOutputConstraints size="
                f"{c.max_additional_size} sigops={c.max_additional_sigops}"
            )

    async def _handshake(self) -> list[Any]:
        assert self._reader is not None and self._conn is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise JdcTimeout("Noise handshake timed out")
            try:
                data = await asyncio.wait_for(self._reader.read(READ_CHUNK), left)
            except TimeoutError:
                raise JdcTimeout("Noise handshake timed out") from None
            if not data:
                raise JdcConnectionLost("the server closed the connection during the handshake")
            items = self._conn.receive_data(data)  # HandshakeFailed propagates as is
            for i, it in enumerate(items):
                if isinstance(it, HandshakeComplete):
                    return items[i + 1 :]

    async def _negotiate(self) -> None:
        req = RequestExtensions(
            request_id=next(self._ids) & 0xFFFF, requested_extensions=self.requested_extensions
        )
        fut = self._expect("ext", req.request_id)
        self._send(req)
        reply = await self._wait(fut, "RequestExtensions")
        if isinstance(reply, RequestExtensionsError):
            if reply.required_extensions:
                raise SetupRejected(
                    "the server requires extensions "
                    + ", ".join(f"{e:#06x}" for e in reply.required_extensions),
                    code="extensions-required",
                )
            # 0x0001: without the requested extensions the connection works as base spec.
            self._say(
                "extensions refused: "
                + ", ".join(f"{e:#06x}" for e in reply.unsupported_extensions)
                + "; base-spec JD (pool payout output only)"
            )
            self.negotiated = frozenset()
            return
        assert isinstance(reply, RequestExtensionsSuccess)
        names = ", ".join(f"{e:#06x}" for e in reply.supported_extensions) or "none"
        self._say(f"extensions negotiated: {names}")

    async def close(self) -> None:
        """Close the connection (idempotent); outstanding requests fail."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_all("connection closed")
        if self._conn is not None:
            self._conn.close()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None

    # -- plumbing -----------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        if self._conn is None or self._writer is None or self._closed_reason is not None:
            raise JdcConnectionLost(self._closed_reason or "not connected")
        self._writer.write(self._conn.send(msg))

    def _expect(self, kind: str, request_id: int) -> asyncio.Future[Message]:
        if self._closed_reason is not None:
            raise JdcConnectionLost(self._closed_reason)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._futures[(kind, request_id)] = fut
        return fut

    async def _wait(self, fut: asyncio.Future[T], what: str, timeout: float | None = None) -> T:
        try:
            return await asyncio.wait_for(fut, self.timeout if timeout is None else timeout)
        except TimeoutError:
            raise JdcTimeout(f"no answer to {what} within {self.timeout:g}s") from None

    def _resolve(self, kind: str, request_id: int, msg: Message) -> None:
        fut = self._futures.pop((kind, request_id), None)
        if fut is None or fut.done():
            self._count(f"unexpected:{msg.NAME}")
            log.info("JDC: %s for unknown request %d ignored", msg.NAME, request_id)
            return
        fut.set_result(msg)

    def _fail_all(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(JdcConnectionLost(reason))
        self._futures.clear()

    async def _read_loop(self) -> None:
        assert self._reader is not None and self._conn is not None
        reason = "closed by the server"
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    break
                await self._dispatch_all(self._conn.receive_data(data))
                if self._writer is not None:
                    await self._writer.drain()
        except ConnectionFailed as exc:
            reason = f"{exc.code}: {exc.message}"
        except (ConnectionError, OSError) as exc:
            reason = f"socket: {exc}"
        finally:
            self._fail_all(reason)
            async with self._changed:
                self._changed.notify_all()
            log.info("JDC: connection ended: %s", reason)

    async def _dispatch_all(self, items: list[Any]) -> None:
        for it in items:
            if isinstance(it, UnknownMessage):
                # sv2-spec §3.4: a non-channel message of an unknown extension is discarded.
                self._count("unknown-messages")
                continue
            if isinstance(it, MalformedMessage):
                self._count("malformed-messages")
                log.warning("JDC: malformed %#04x ignored: %s", it.frame.msg_type, it.error)
                continue
            if isinstance(it, HandshakeComplete):
                continue
            await self._dispatch(it)

    async def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, SetupConnectionSuccess | SetupConnectionError):
            self._resolve("setup", 0, msg)
        elif isinstance(msg, RequestExtensionsSuccess | RequestExtensionsError):
            if isinstance(msg, RequestExtensionsSuccess):
                # Set here, not in _negotiate: the server's SetPayoutDistribution follows in
                # the same read (PR #203 §3.1) and must find the extension negotiated.
                self.negotiated = frozenset(msg.supported_extensions)
            self._resolve("ext", msg.request_id, msg)
        elif isinstance(msg, SetPayoutDistribution):
            await self._on_distribution(msg)
        elif isinstance(msg, SetSettlementMode):
            await self._on_mode(msg)
        elif isinstance(msg, AllocateMiningJobTokenSuccess):
            self._resolve("token", msg.request_id, msg)
        elif isinstance(msg, DeclareMiningJobSuccess | DeclareMiningJobError):
            self._outstanding.pop(msg.request_id, None)
            self._resolve("declare", msg.request_id, msg)
        elif isinstance(msg, ProvideMissingTransactions):
            self._on_missing(msg)
        elif isinstance(msg, RequestPayoutOutputsSuccess | RequestPayoutOutputsError):
            self._resolve("payout-outputs", msg.request_id, msg)
        else:
            self._count(f"ignored:{msg.NAME}")
            log.info("JDC: %s ignored", msg.NAME)

    # -- pushed state -------------------------------------------------------------------------

    async def _on_distribution(self, msg: SetPayoutDistribution) -> None:
        if EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated:
            self._count("distribution-not-negotiated")  # 0x0001: not to be used; discard
            return
        try:
            d = distribution_from_message(msg)
        except ValidationError as exc:
            # Keep the last good distribution; declarations name it and the server decides.
            self._count("invalid-distribution")
            log.warning("JDC: invalid SetPayoutDistribution %d: %s", msg.distribution_id, exc)
            return
        cur = self.distribution
        if cur is not None and d.distribution_id <= cur.distribution_id:
            # PR #203 §3.1: ids are strictly increasing; an older one is a replay.
            self._count("distribution-not-newer")
            return
        self.previous_distribution, self.distribution = cur, d
        self._count("distributions")
        await self._update_constraints()
        async with self._changed:
            self._changed.notify_all()

    async def _on_mode(self, msg: SetSettlementMode) -> None:
        if EXT_SETTLEMENT_MODES not in self.negotiated:
            self._count("mode-not-negotiated")
            return
        try:
            mode = SettlementMode.from_message(msg)
        except ValidationError as exc:
            self._count("invalid-mode")
            log.warning("JDC: invalid SetSettlementMode %d: %s", msg.distribution_id, exc)
            return
        self.modes[msg.distribution_id] = mode
        keep = {x.distribution_id for x in (self.distribution, self.previous_distribution) if x}
        for k in [k for k in self.modes if k not in keep and k != msg.distribution_id]:
            del self.modes[k]
        await self._update_constraints()
        async with self._changed:
            self._changed.notify_all()

    async def _update_constraints(self) -> None:
        d = self.distribution
        if d is None:
            return
        c = constraints_for(d, self.mode_for(d.distribution_id).name)
        if c == self.constraints:
            return
        self.constraints = c
        if self.on_constraints is not None:
            res = self.on_constraints(c)
            if inspect.isawaitable(res):
                await res

    def mode_for(self, distribution_id: int) -> SettlementMode:
        """The settlement mode announced for a distribution (``coinbase`` without 0x4003)."""
        return self.modes.get(distribution_id) or SettlementMode("coinbase")

    def constraints_message(self) -> CoinbaseOutputConstraints:
        """CoinbaseOutputConstraints for the Template Provider. Refused before the first
        distribution (PR #203: the JDC MUST NOT send it before then)."""
        if self.constraints is None:
            raise JdcError(
                "no SetPayoutDistribution yet: CoinbaseOutputConstraints must wait for it "
                "(PR #203)",
                code="no-distribution",
            )
        return self.constraints.message()

    def _mode_known(self, distribution_id: int) -> bool:
        return EXT_SETTLEMENT_MODES not in self.negotiated or distribution_id in self.modes

    async def wait_for_distribution(
        self, *, after: int | None = None, timeout: float | None = None
    ) -> Distribution:
        """The current distribution once there is one newer than ``after`` (and, with 0x4003,
        its settlement mode has arrived: the server sends it right after)."""
        limit = self.distribution_timeout if timeout is None else timeout

        def ready() -> bool:
            d = self.distribution
            return self._closed_reason is not None or (
                d is not None
                and (after is None or d.distribution_id > after)
                and self._mode_known(d.distribution_id)
            )

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), limit)
            except TimeoutError:
                d = self.distribution
                if d is not None and (after is None or d.distribution_id > after):
                    # The mode never came: the distribution settles as plain coinbase.
                    log.warning(
                        "JDC: no SetSettlementMode for %d; assuming coinbase", d.distribution_id
                    )
                    return d
                raise JdcTimeout(
                    "no SetPayoutDistribution"
                    + (f" newer than {after}" if after is not None else "")
                    + f" within {limit:g}s"
                ) from None
        if self.distribution is None or (
            after is not None and self.distribution.distribution_id <= after
        ):
            raise JdcConnectionLost(self._closed_reason or "connection closed")
        return self.distribution

    # -- jobs ---------------------------------------------------------------------------------

    async def allocate_token(self) -> AllocateMiningJobTokenSuccess:
        """AllocateMiningJobToken -> .Success (§6.4.2-3). With 0x0003 its outputs are empty
        (PR #203 §2); without it the first one is the pool payout output."""
        req = AllocateMiningJobToken(
            user_identifier=self.user_identifier, request_id=next(self._ids) & 0xFFFFFFFF
        )
        fut = self._expect("token", req.request_id)
        self._send(req)
        reply = await self._wait(fut, "AllocateMiningJobToken")
        assert isinstance(reply, AllocateMiningJobTokenSuccess)
        return reply

    def build_coinbase(
        self,
        template: JobTemplate,
        distribution: Distribution | None = None,
        *,
        token_outputs: bytes = b"",
    ) -> JobCoinbase:
        """The coinbase this client declares for ``template``: the distribution's mode with
        0x0003, else the base-spec rule (all of T to the first AllocateMiningJobToken.Success
        output, the pool payout; the others stay 0-valued, §6.4.3)."""
        if EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated:
            d = distribution or self.distribution
            if d is None:
                raise JdcError("no distribution to build a coinbase from", code="no-distribution")
            return build_job_coinbase(
                d,
                template,
                self.mode_for(d.distribution_id),
                expected_outputs=self.expected_outputs,
                budget=self.budget,
                extranonce_size=self.extranonce_size,
                tag=self.tag,
            )
        outs = parse_output_vector(token_outputs) if token_outputs else ()
        if not outs:
            raise JdcError(
                "the server gave no pool payout output and 0x0003 is not negotiated",
                code="no-pool-output",
            )
        pool = TxOut(template.revenue, outs[0].script)
        rest = tuple(TxOut(0, o.script) for o in outs[1:])
        return build_outputs_coinbase(
            (pool, *rest),
            template,
            mode="pool",
            extranonce_size=self.extranonce_size,
            tag=self.tag,
        )

    async def _declare_once(
        self, template: JobTemplate, token: bytes, coinbase: JobCoinbase
    ) -> DeclareMiningJobSuccess | DeclareMiningJobError:
        tlvs: tuple[DistributionIdTlv, ...] = ()
        if coinbase.distribution_id is not None and EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated:
            tlvs = (DistributionIdTlv(coinbase.distribution_id),)
        msg = DeclareMiningJob(
            request_id=next(self._ids) & 0xFFFFFFFF,
            mining_job_token=token,
            version=template.version & 0xFFFFFFFF,
            coinbase_tx_prefix=coinbase.prefix,
            coinbase_tx_suffix=coinbase.suffix,
            wtxid_list=template.wtxids,
            excess_data=b"",
            tlvs=tlvs,
        )
        # Keep the raw txs so ProvideMissingTransactions is answered from the reader task.
        self._outstanding[msg.request_id] = _Outstanding(
            msg, tuple(t.serialize() for t in template.transactions)
        )
        fut = self._expect("declare", msg.request_id)
        self._send(msg)
        try:
            reply = await self._wait(fut, "DeclareMiningJob")
        finally:
            self._outstanding.pop(msg.request_id, None)
        assert isinstance(reply, DeclareMiningJobSuccess | DeclareMiningJobError)
        return reply

    def _on_missing(self, msg: ProvideMissingTransactions) -> None:
        """§6.4.6: send the transactions at the requested positions of ``wtxid_list``, in the
        requested order (PR #182: ``request_id`` is the DeclareMiningJob's)."""
        job = self._outstanding.get(msg.request_id)
        if job is None:
            self._count("missing-txs-unknown-request")
            log.info("JDC: ProvideMissingTransactions for unknown request %d", msg.request_id)
            return
        positions = [i for i in msg.unknown_tx_position_list if 0 <= i < len(job.transactions)]
        if len(positions) != len(msg.unknown_tx_position_list):
            # Out-of-range positions cannot be answered; send the rest and let the server
            # reject the job with its own code (missing-txs).
            log.warning("JDC: ProvideMissingTransactions asks for positions out of range")
        job.missing_requests += 1
        job.provided.extend(positions)
        self._count("missing-txs-requests")
        self._say(f"server asked for {len(positions)} transaction(s); sending them")
        self._send(
            ProvideMissingTransactionsSuccess(
                request_id=msg.request_id,
                transaction_list=tuple(job.transactions[i] for i in positions),
            )
        )

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
                alloc = await self.allocate_token()
                coinbase = self.build_coinbase(
                    template, dist, token_outputs=alloc.coinbase_tx_outputs
                )
                reply = await self._declare_once(template, alloc.mining_job_token, coinbase)
            except JdcTimeout as exc:
                raise await self._give_up(
                    "timeout", exc.message, template, coinbase, attempts
                ) from None
            except ValidationError as exc:
                # This client cannot build a coinbase for the pool's rule (budget, mode, T).
                raise await self._give_up(
                    exc.code, exc.message, template, coinbase, attempts
                ) from None
            if isinstance(reply, DeclareMiningJobSuccess):
                self._count("declared")
                self._say(
                    f"DeclareMiningJob.Success: job {reply.request_id}, "
                    f"{len(template.transactions)} txs, T={template.revenue} sat, "
                    f"mode {coinbase.mode}"
                    + (
                        f", distribution {coinbase.distribution_id}"
                        if coinbase.distribution_id is not None
                        else ""
                    )
                )
                return DeclaredJob(
                    reply.request_id,
                    reply.new_mining_job_token,
                    template,
                    coinbase,
                    coinbase.distribution_id,
                    coinbase.mode,
                    attempts,
                )
            details = bytes(reply.error_details).decode("utf-8", "replace")
            # §3.5 / PR #194: codes are implementation-defined; log every one.
            log.warning("JDC: DeclareMiningJob.Error %s: %s", reply.error_code, details)
            self._say(f"DeclareMiningJob.Error {reply.error_code}: {details}".rstrip(": "))
            self._count(f"declare-error:{reply.error_code}")
            if (
                reply.error_code == ERR_STALE_PAYOUT_DISTRIBUTION
                and attempts <= self.max_redeclare
                and coinbase.distribution_id is not None
            ):
                try:
                    dist = await self.wait_for_distribution(after=coinbase.distribution_id)
                except JdcError as exc:
                    raise await self._give_up(
                        reply.error_code, f"{details}; {exc.message}", template, coinbase, attempts
                    ) from None
                self._say(f"redeclaring with distribution {dist.distribution_id}")
                continue
            raise await self._give_up(reply.error_code, details, template, coinbase, attempts)

    async def request_payout_outputs(self, token: bytes, value: int) -> tuple[TxOut, ...]:
        """Per-job adapter (0x4002, sv2-spec PR #202): the outputs paying exactly ``value``
        for this token; one round trip. Raises :class:`JdcError` with the server's code."""
        if EXT_PER_JOB_PAYOUTS not in self.negotiated:
            raise JdcError("extension 0x4002 was not negotiated", code="extension-not-negotiated")
        req = RequestPayoutOutputs(
            request_id=next(self._ids) & 0xFFFFFFFF,
            mining_job_token=token,
            available_payout_value=value,
        )
        fut = self._expect("payout-outputs", req.request_id)
        self._send(req)
        reply = await self._wait(fut, "RequestPayoutOutputs")
        if isinstance(reply, RequestPayoutOutputsError):
            raise JdcError(f"RequestPayoutOutputs.Error {reply.error_code}", code=reply.error_code)
        assert isinstance(reply, RequestPayoutOutputsSuccess)
        outs = parse_output_vector(reply.coinbase_tx_outputs)
        total = sum(o.value for o in outs)
        if total != value:
            # PR #202 §2.2: the set sums exactly to the requested value.
            raise JdcError(
                f"RequestPayoutOutputs.Success pays {total} sat, not {value}",
                code="invalid-payout-outputs",
            )
        return outs

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
            coinbase = build_outputs_coinbase(
                outs, template, extranonce_size=self.extranonce_size, tag=self.tag
            )
            reply = await self._declare_once(template, alloc.mining_job_token, coinbase)
        except (JdcTimeout, ValidationError) as exc:
            raise await self._give_up(exc.code, exc.message, template, coinbase, 1) from None
        except JdcConnectionLost:
            raise
        except JdcError as exc:
            raise await self._give_up(exc.code, exc.message, template, coinbase, 1) from None
        if isinstance(reply, DeclareMiningJobError):
            details = bytes(reply.error_details).decode("utf-8", "replace")
            log.warning("JDC: DeclareMiningJob.Error %s: %s", reply.error_code, details)
            raise await self._give_up(reply.error_code, details, template, coinbase, 1)
        self._count("declared")
        self._say(f"DeclareMiningJob.Success: job {reply.request_id} (per-job outputs)")
        return DeclaredJob(
            reply.request_id, reply.new_mining_job_token, template, coinbase, None, "per-job", 1
        )

    def push_solution(self, job: DeclaredJob, solution: Solution) -> PushSolution:
        """Send PushSolution (§6.4.9) for ``job`` -- valid for the most recent
        DeclareMiningJob.Success on this connection. There is no reply message; whether the
        block was accepted is the node's to say."""
        h = solution.header
        msg = PushSolution(
            extranonce=solution.extranonce,
            prev_hash=h.prev_hash,
            nonce=h.nonce,
            ntime=h.time,
            nbits=h.bits,
            version=h.version & 0xFFFFFFFF,
        )
        self._send(msg)
        self._count("solutions-pushed")
        self._say(f"PushSolution sent: block {h.hash_hex}")
        return msg

    async def drain(self) -> None:
        """Wait until written bytes are handed to the OS (e.g. before closing)."""
        if self._writer is not None:
            await self._writer.drain()


__all__ = [
    "DEFAULT_EXTENSIONS",
    "DeclarationRejected",
    "DeclaredJob",
    "FallbackEvent",
    "JdcConnectionLost",
    "JdcError",
    "JdcTimeout",
    "JobDeclarationClient",
    "SetupRejected",
]
