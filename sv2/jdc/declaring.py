"""Declaring jobs (sv2-spec 06-Job-Declaration-Protocol.md §6.4.2-§6.4.8, Full-Template mode):
``AllocateMiningJobToken``, the coinbase for the mode and T, ``DeclareMiningJob`` with the
``distribution_id`` TLV (PR #203 §6) and the wtxids, answers to ``ProvideMissingTransactions``,
redeclaring after ``stale-payout-distribution`` (PR #203 §7.3: not a reason to fall back unless
it persists), and the PR #202 per-job adapter (extension 0x4002)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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
from sv2.jdc.distributions import DistributionState
from sv2.jdc.errors import JdcConnectionLost, JdcError, JdcTimeout
from sv2.jdc.fallback import FallbackHandling
from sv2.jdc.jobs import (
    JobCoinbase,
    build_job_coinbase,
    build_outputs_coinbase,
    parse_output_vector,
)
from sv2.messages.job_declaration import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
)
from sv2.messages.payouts import (
    ERR_STALE_PAYOUT_DISTRIBUTION,
    EXT_NON_CUSTODIAL_PAYOUTS,
    EXT_PER_JOB_PAYOUTS,
    DistributionIdTlv,
    RequestPayoutOutputs,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
)
from sv2.template import JobTemplate

log = logging.getLogger(__name__)


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
class _Outstanding:
    """A DeclareMiningJob in flight: its transactions answer ProvideMissingTransactions."""

    msg: DeclareMiningJob
    transactions: tuple[bytes, ...]
    missing_requests: int = 0
    provided: list[int] = field(default_factory=list)


class Declaring(DistributionState, FallbackHandling):
    """Token, coinbase, declaration; the fallback when the pool refuses."""

    user_identifier: str
    extranonce_size: int
    tag: bytes
    expected_outputs: ExpectedOutputs | None
    budget: Budget | None
    max_redeclare: int
    node: DeploymentInfo | None
    ctv_active: bool | None
    _outstanding: dict[int, _Outstanding]

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
            mode = self.mode_for(d.distribution_id)
            # The node's answer from declare_job (:meth:`_ask_ctv`); None: never asked.
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

    async def _ask_ctv(self, distribution: Distribution | None) -> None:
        """Before a coinbase in a mode that needs CTV: ask the own node again (its answer is
        also what :meth:`build_coinbase` checks) and refuse before any token is allocated.
        Other modes ask nothing."""
        d = distribution or self.distribution
        if EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated or d is None:
            return
        mode: SettlementMode = self.mode_for(d.distribution_id)
        if mode.needs_ctv:
            answer = await ctv_active_on(self.node)
            self.ctv_active = None if answer is None else answer is True
            check_ctv_for(mode, self.ctv_active, "the JD client")

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
            except JdcTimeout as exc:
                raise await self._give_up(
                    "timeout", exc.message, template, coinbase, attempts
                ) from None
            except CtvNotActiveError as exc:
                # The pool settles in a mode this miner's chain cannot enforce: no such
                # coinbase is built or declared; mine elsewhere (sv2-spec §6.4.5).
                raise await self._give_up(
                    exc.code, exc.message, template, coinbase, attempts
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


__all__ = ["DeclaredJob", "Declaring"]
