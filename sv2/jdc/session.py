"""The JD client's side of one connection as a sans-I/O session (sv2-spec
06-Job-Declaration-Protocol.md, Full-Template mode, with extensions 0x0003 (PR #203), 0x4003
(settlement modes) and 0x4002 (the PR #202 per-job adapter)). docs/jdc.md shows the client from
a miner's side.

A :class:`JdcSession` holds what the client knows of its JDS -- the negotiated extensions, the
pushed distributions and modes (:class:`~sv2.jdc.distributions.PayoutState`), the declarations
in flight, the node's last CTV answer -- and never touches a socket, a timer or the node:

- requests are built here (:meth:`~JdcSession.allocate_token`, :meth:`~JdcSession.declare`,
  :meth:`~JdcSession.request_payout_outputs`, :meth:`~JdcSession.push_solution`; request ids
  come from one counter), and so is the coinbase (:meth:`~JdcSession.build_coinbase`);
- :meth:`~JdcSession.receive` takes one decoded message and returns the outputs, in order: a
  :class:`~sv2.session.Reply` for the request it answers, a message to send (the answer to
  ``ProvideMissingTransactions``), :class:`ConstraintsChanged`, and
  :data:`~sv2.session.STATE_CHANGED` when pushed state changed;
- the decisions are here too: what an extension reply means (:meth:`~JdcSession.on_extensions`),
  and what to do with a declaration's answer (:meth:`~JdcSession.judge`: accepted, declare again
  on a newer distribution, or give up and fall back).

The asyncio client (:class:`sv2.jdc.client.JobDeclarationClient`) sends what the session
builds, waits for the replies, asks the node and fires the fallback.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from payouts.distribution.fitting import Budget
from payouts.distribution.model import Distribution
from payouts.settlement.modes import ExpectedOutputs, SettlementMode, check_ctv_for
from payouts.tx.txout import TxOut
from sv2.connection import MalformedMessage
from sv2.jdc.constraints import OutputConstraints
from sv2.jdc.distributions import PayoutState
from sv2.jdc.errors import JdcError, SetupRejected
from sv2.job_coinbase import (
    DEFAULT_EXTRANONCE_SIZE,
    DEFAULT_TAG,
    JobCoinbase,
    build_job_coinbase,
    build_outputs_coinbase,
    parse_output_vector,
)
from sv2.messages import (
    EXT_NON_CUSTODIAL_PAYOUTS,
    EXT_PER_JOB_PAYOUTS,
    EXT_SETTLEMENT_MODES,
    DistributionIdTlv,
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
    RequestPayoutOutputs,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
    SetPayoutDistribution,
    SetSettlementMode,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.messages import job_declaration as jd
from sv2.messages.base import Message
from sv2.messages.common import JD_FLAG_DECLARE_TX_DATA, PROTOCOL_JOB_DECLARATION
from sv2.messages.payouts import ERR_STALE_PAYOUT_DISTRIBUTION
from sv2.session import STATE_CHANGED, Reply, StateChanged, setup_connection
from sv2.solution import Solution
from sv2.template import JobTemplate

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (EXT_NON_CUSTODIAL_PAYOUTS, EXT_SETTLEMENT_MODES)


@dataclass(frozen=True, slots=True)
class DeclaredJob:
    """A job the JDS accepted (DeclareMiningJob.Success)."""

    request_id: int
    token: bytes  # new_mining_job_token (what SetCustomMiningJob carries)
    template: JobTemplate
    coinbase: JobCoinbase
    distribution_id: int | None
    mode: str
    attempts: int  # declarations it took (> 1 after stale-payout-distribution)

    @property
    def payout_outputs(self) -> tuple[TxOut, ...]:
        return self.coinbase.payout_outputs


@dataclass(slots=True)
class Outstanding:
    """A DeclareMiningJob in flight: its transactions answer ProvideMissingTransactions."""

    msg: jd.DeclareMiningJob
    transactions: tuple[bytes, ...]
    missing_requests: int = 0
    provided: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConstraintsChanged:
    """An output of :meth:`JdcSession.receive`: the CoinbaseOutputConstraints changed (the
    Template Provider must hear of them)."""

    constraints: OutputConstraints


@dataclass(frozen=True, slots=True)
class Accepted:
    """:meth:`JdcSession.judge`: the JDS accepted the declaration."""

    job: DeclaredJob


@dataclass(frozen=True, slots=True)
class Redeclare:
    """:meth:`JdcSession.judge`: ``stale-payout-distribution``; declare again once a
    distribution newer than ``after`` arrived (PR #203 §7.3: not a reason to fall back unless
    it persists)."""

    after: int
    code: str
    details: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    """:meth:`JdcSession.judge`: refused for good; fall back (sv2-spec §6.4.5)."""

    code: str
    details: str


Verdict = Accepted | Redeclare | GiveUp
Output = Reply | Message | ConstraintsChanged | StateChanged


class JdcSession:
    """One JD client connection, sans-I/O (see the module docstring). ``stats`` is the
    client's counter dict, shared."""

    def __init__(
        self,
        *,
        extensions: Sequence[int] = DEFAULT_EXTENSIONS,
        user_identifier: str = "payouts-jdc",
        extranonce_size: int = DEFAULT_EXTRANONCE_SIZE,
        tag: bytes = DEFAULT_TAG,
        expected_outputs: ExpectedOutputs | None = None,
        budget: Budget | None = None,
        max_redeclare: int = 3,
        vendor: str = "payouts-jdc",
        stats: dict[str, int] | None = None,
        coinbase_only: bool = False,
    ) -> None:
        self.coinbase_only = coinbase_only
        self.requested_extensions = tuple(dict.fromkeys(extensions))
        self.user_identifier = user_identifier
        self.extranonce_size = extranonce_size
        self.tag = tag
        self.expected_outputs = expected_outputs
        self.budget = budget
        self.max_redeclare = max_redeclare
        self.vendor = vendor
        self.stats: dict[str, int] = {} if stats is None else stats
        self.negotiated: frozenset[int] = frozenset()
        self.payouts = PayoutState(self.stats)
        self.ctv_active: bool | None = None  # the node's last answer (None: not asked)
        self.outstanding: dict[int, Outstanding] = {}
        self._ids = itertools.count(1)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- connection set-up ----------------------------------------------------------------------

    def setup_connection(self, host: str, port: int) -> SetupConnection:
        """SetupConnection: protocol 1, ``DECLARE_TX_DATA`` (Full-Template mode, §6.4.1), or no
        flag in Coinbase-only mode (§6.1: the flag chooses the mode)."""
        return setup_connection(
            PROTOCOL_JOB_DECLARATION,
            0 if self.coinbase_only else JD_FLAG_DECLARE_TX_DATA,
            host=host,
            port=port,
            vendor=self.vendor,
            device_id=self.user_identifier,
        )

    def request_extensions(self) -> RequestExtensions:
        return RequestExtensions(
            request_id=next(self._ids) & 0xFFFF, requested_extensions=self.requested_extensions
        )

    def on_extensions(self, reply: RequestExtensionsSuccess | RequestExtensionsError) -> None:
        """The answer to RequestExtensions. An error naming required extensions raises
        :class:`SetupRejected`; any other error leaves the connection base-spec (0x0001:
        without the requested extensions the connection works as the base protocol)."""
        if isinstance(reply, RequestExtensionsError):
            if reply.required_extensions:
                raise SetupRejected(
                    "the server requires extensions "
                    + ", ".join(f"{e:#06x}" for e in reply.required_extensions),
                    code="extensions-required",
                )
            self.negotiated = frozenset()

    # -- received messages ----------------------------------------------------------------------

    def receive(self, msg: Message) -> list[Output]:
        """Handle one message from the JDS; the outputs in order (module docstring)."""
        if isinstance(msg, SetupConnectionSuccess | SetupConnectionError):
            return [Reply("setup", 0, msg)]
        if isinstance(msg, RequestExtensionsSuccess | RequestExtensionsError):
            if isinstance(msg, RequestExtensionsSuccess):
                # Set here, not when the reply is read: the server's SetPayoutDistribution
                # follows in the same read (PR #203 §3.1) and must find it negotiated.
                self.negotiated = frozenset(msg.supported_extensions)
                self.payouts.modes_negotiated = EXT_SETTLEMENT_MODES in self.negotiated
            return [Reply("ext", msg.request_id, msg)]
        if isinstance(msg, SetPayoutDistribution):
            if EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated:
                self._count("distribution-not-negotiated")  # 0x0001: not to be used; discard
                return []
            return self._payouts_changed(self.payouts.on_distribution(msg))
        if isinstance(msg, SetSettlementMode):
            if EXT_SETTLEMENT_MODES not in self.negotiated:
                self._count("mode-not-negotiated")
                return []
            return self._payouts_changed(self.payouts.on_mode(msg))
        if isinstance(msg, jd.AllocateMiningJobTokenSuccess):
            return [Reply("token", msg.request_id, msg)]
        if isinstance(msg, jd.DeclareMiningJobSuccess | jd.DeclareMiningJobError):
            self.outstanding.pop(msg.request_id, None)
            return [Reply("declare", msg.request_id, msg)]
        if isinstance(msg, jd.ProvideMissingTransactions):
            return self._on_missing(msg)
        if isinstance(msg, RequestPayoutOutputsSuccess | RequestPayoutOutputsError):
            return [Reply("payout-outputs", msg.request_id, msg)]
        self._count(f"ignored:{msg.NAME}")
        log.info("JDC: %s ignored", msg.NAME)
        return []

    def malformed(self, item: MalformedMessage) -> list[Output]:
        """A frame of a known type that did not decode. A refused SetSettlementMode (the codec
        checks docs/extensions §6) makes the latest distribution unusable: declarations for it
        fall back with the codec's code instead of guessing a mode."""
        f = item.frame
        if (f.extension_type & 0x7FFF, f.msg_type) == (
                SetSettlementMode.EXTENSION_TYPE, SetSettlementMode.MSG_TYPE) and (
                EXT_SETTLEMENT_MODES in self.negotiated):
            return self._payouts_changed(
                self.payouts.refuse_mode(None, item.error.code, item.error.reason))
        return []

    def _payouts_changed(self, changed: bool) -> list[Output]:
        if not changed:
            return []
        out: list[Output] = []
        c = self.payouts.update_constraints()
        if c is not None:
            out.append(ConstraintsChanged(c))
        out.append(STATE_CHANGED)
        return out

    def _on_missing(self, msg: jd.ProvideMissingTransactions) -> list[Output]:
        """§6.4.6: the transactions at the requested positions of ``wtxid_list``, in the
        requested order (PR #182: ``request_id`` is the DeclareMiningJob's)."""
        job = self.outstanding.get(msg.request_id)
        if job is None:
            self._count("missing-txs-unknown-request")
            log.info("JDC: ProvideMissingTransactions for unknown request %d", msg.request_id)
            return []
        positions = [i for i in msg.unknown_tx_position_list if 0 <= i < len(job.transactions)]
        if len(positions) != len(msg.unknown_tx_position_list):
            # Out-of-range positions cannot be answered; send the rest and let the server
            # reject the job with its own code (missing-txs).
            log.warning("JDC: ProvideMissingTransactions asks for positions out of range")
        job.missing_requests += 1
        job.provided.extend(positions)
        self._count("missing-txs-requests")
        return [
            jd.ProvideMissingTransactionsSuccess(
                request_id=msg.request_id,
                transaction_list=tuple(job.transactions[i] for i in positions),
            )
        ]

    # -- declaring ------------------------------------------------------------------------------

    def allocate_token(self) -> jd.AllocateMiningJobToken:
        """AllocateMiningJobToken (§6.4.2); the reply's outputs are empty with 0x0003 (PR #203
        §2), else the first one is the pool payout output."""
        return jd.AllocateMiningJobToken(
            user_identifier=self.user_identifier, request_id=next(self._ids) & 0xFFFFFFFF
        )

    def mode_needing_ctv(self, distribution: Distribution | None) -> SettlementMode | None:
        """The mode a coinbase for ``distribution`` (default: the latest) would settle in, if
        that mode needs CTV: the node must be asked before such a coinbase is built."""
        d = distribution or self.payouts.distribution
        if EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated or d is None:
            return None
        mode = self.payouts.mode_for(d.distribution_id)
        return mode if mode.needs_ctv else None

    def build_coinbase(
        self,
        template: JobTemplate,
        distribution: Distribution | None = None,
        *,
        token_outputs: bytes = b"",
    ) -> JobCoinbase:
        """The coinbase this client declares for ``template``: the distribution's mode with
        0x0003, else the base-spec rule (all of T to the first AllocateMiningJobToken.Success
        output, the pool payout; the others stay 0-valued, §6.4.3). A mode that needs CTV is
        refused unless the node's last answer (:attr:`ctv_active`) said it is enforced."""
        if EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated:
            d = distribution or self.payouts.distribution
            if d is None:
                raise JdcError("no distribution to build a coinbase from", code="no-distribution")
            mode = self.payouts.mode_for(d.distribution_id)
            check_ctv_for(mode, self.ctv_active, "the JD client")
            return build_job_coinbase(
                d,
                template,
                mode,
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

    def build_outputs_coinbase(
        self, outputs: Sequence[TxOut], template: JobTemplate
    ) -> JobCoinbase:
        """The per-job adapter's coinbase: ``outputs`` (RequestPayoutOutputs.Success) first."""
        return build_outputs_coinbase(
            outputs, template, extranonce_size=self.extranonce_size, tag=self.tag
        )

    def declare(
        self, template: JobTemplate, token: bytes, coinbase: JobCoinbase
    ) -> jd.DeclareMiningJob:
        """DeclareMiningJob (§6.4.4) with the ``distribution_id`` TLV (PR #203 §6) and the
        template's wtxids; its transactions are kept to answer ProvideMissingTransactions until
        the answer comes (or :meth:`forget`)."""
        tlvs: tuple[DistributionIdTlv, ...] = ()
        if coinbase.distribution_id is not None and EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated:
            tlvs = (DistributionIdTlv(coinbase.distribution_id),)
        msg = jd.DeclareMiningJob(
            request_id=next(self._ids) & 0xFFFFFFFF,
            mining_job_token=token,
            version=template.version & 0xFFFFFFFF,
            coinbase_tx_prefix=coinbase.prefix,
            coinbase_tx_suffix=coinbase.suffix,
            wtxid_list=template.wtxids,
            excess_data=b"",
            tlvs=tlvs,
        )
        self.outstanding[msg.request_id] = Outstanding(
            msg, tuple(t.serialize() for t in template.transactions)
        )
        return msg

    def forget(self, request_id: int) -> None:
        """A declaration was answered or abandoned: no more transactions for it."""
        self.outstanding.pop(request_id, None)

    def accepted(
        self,
        reply: jd.DeclareMiningJobSuccess,
        template: JobTemplate,
        coinbase: JobCoinbase,
        attempts: int,
    ) -> DeclaredJob:
        """The job a DeclareMiningJob.Success accepted."""
        self._count("declared")
        return DeclaredJob(
            reply.request_id,
            reply.new_mining_job_token,
            template,
            coinbase,
            coinbase.distribution_id,
            coinbase.mode,
            attempts,
        )

    def refused(self, reply: jd.DeclareMiningJobError) -> GiveUp:
        """A DeclareMiningJob.Error's code and details (logged: §3.5 / PR #194 codes are
        implementation-defined, so every one is)."""
        details = bytes(reply.error_details).decode("utf-8", "replace")
        log.warning("JDC: DeclareMiningJob.Error %s: %s", reply.error_code, details)
        return GiveUp(reply.error_code, details)

    def judge(
        self,
        reply: jd.DeclareMiningJobSuccess | jd.DeclareMiningJobError,
        template: JobTemplate,
        coinbase: JobCoinbase,
        attempts: int,
    ) -> Verdict:
        """What a declaration's answer means: accepted; ``stale-payout-distribution`` on a
        0x0003 job, up to ``max_redeclare`` times: declare again on a newer distribution;
        anything else: give up."""
        if isinstance(reply, jd.DeclareMiningJobSuccess):
            return Accepted(self.accepted(reply, template, coinbase, attempts))
        refusal = self.refused(reply)
        self._count(f"declare-error:{refusal.code}")
        if (
            refusal.code == ERR_STALE_PAYOUT_DISTRIBUTION
            and attempts <= self.max_redeclare
            and coinbase.distribution_id is not None
        ):
            return Redeclare(coinbase.distribution_id, refusal.code, refusal.details)
        return refusal

    # -- the per-job adapter (0x4002, sv2-spec PR #202) -----------------------------------------

    def request_payout_outputs(self, token: bytes, value: int) -> RequestPayoutOutputs:
        if EXT_PER_JOB_PAYOUTS not in self.negotiated:
            raise JdcError("extension 0x4002 was not negotiated", code="extension-not-negotiated")
        return RequestPayoutOutputs(
            request_id=next(self._ids) & 0xFFFFFFFF,
            mining_job_token=token,
            available_payout_value=value,
        )

    def payout_outputs(
        self, reply: RequestPayoutOutputsSuccess | RequestPayoutOutputsError, value: int
    ) -> tuple[TxOut, ...]:
        """The outputs of a RequestPayoutOutputs answer; :class:`JdcError` with the server's
        code, or ``invalid-payout-outputs`` when they do not pay exactly ``value`` (PR #202
        §2.2)."""
        if isinstance(reply, RequestPayoutOutputsError):
            raise JdcError(f"RequestPayoutOutputs.Error {reply.error_code}", code=reply.error_code)
        outs = parse_output_vector(reply.coinbase_tx_outputs)
        total = sum(o.value for o in outs)
        if total != value:
            raise JdcError(
                f"RequestPayoutOutputs.Success pays {total} sat, not {value}",
                code="invalid-payout-outputs",
            )
        return outs

    # -- solutions ------------------------------------------------------------------------------

    def push_solution(self, solution: Solution) -> jd.PushSolution:
        """PushSolution (§6.4.9), valid for the most recent DeclareMiningJob.Success on this
        connection."""
        h = solution.header
        return jd.PushSolution(
            extranonce=solution.extranonce,
            prev_hash=h.prev_hash,
            nonce=h.nonce,
            ntime=h.time,
            nbits=h.bits,
            version=h.version & 0xFFFFFFFF,
        )


__all__ = [
    "DEFAULT_EXTENSIONS",
    "Accepted",
    "ConstraintsChanged",
    "DeclaredJob",
    "GiveUp",
    "JdcSession",
    "Output",
    "Outstanding",
    "Redeclare",
    "Verdict",
]
