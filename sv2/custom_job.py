"""The pool's check of a ``SetCustomMiningJob`` against the job its JDS accepted (sv2-spec
05-Mining-Protocol.md §5.3.18-§5.3.20, Full-Template mode; extension 0x0003, PR #203 §6-§7),
or, in Coinbase-only mode, against the payout distribution alone
(:meth:`CustomJobChecker.check_coinbase_only`, :mod:`sv2.coinbase_only`).
It sits below the roles: the pool's Mining Protocol server uses it with the JD server's
:class:`~sv2.declared_job.DeclaredJob` records, importing neither role's package.

``SetCustomMiningJob.Success`` "acts as a commitment from the Pool to rewarding this job"
(§5.3.19), so the pool must only commit to what its JDS validated: the token names a declared
job (``JobDeclarationServer.declared_job``) and every field equals that job. SRI's pool does
this through its embedded JDS (APPS ``pool-apps/pool/.../mining_message_handler.rs``); a pool
without a JDS answers ``jd-not-supported``.

Checks, in order; the first failure is the answer (``SetCustomMiningJob.Error.error_code``):

=================================  ========================================================
check                              error_code
=================================  ========================================================
token known, declared, unexpired,  ``invalid-mining-job-token``
held by this user, not used yet
``prev_hash``                      ``invalid-job-param-value-prev_hash``
``nbits``                          ``invalid-job-param-value-nbits``
``version``: the declared one,     ``invalid-job-param-value-version``
BIP323 general-purpose bits free
``coinbase_tx_version``            ``invalid-job-param-value-coinbase_tx_version``
``coinbase_prefix``: 1-8 bytes,    ``invalid-job-param-value-coinbase_prefix``
starts the declared scriptSig,
holds the whole BIP-34 height
``coinbase_tx_input_nSequence``    ``invalid-job-param-value-coinbase_tx_input_nSequence``
``distribution_id`` TLV equals     ``invalid-payout-distribution`` (PR #203 §7.3)
the declared one (if sent)
the declared distribution is       ``stale-payout-distribution`` (PR #203 §7.3, §10)
still accepted
``coinbase_tx_outputs``: payout    ``invalid-payout-distribution``
outputs of a 0x0003 job
``coinbase_tx_outputs``: the rest  ``invalid-job-param-value-coinbase_tx_outputs``
``coinbase_tx_locktime``           ``invalid-job-param-value-coinbase_tx_locktime``
``merkle_path``                    ``invalid-job-param-value-merkle_path``
=================================  ========================================================

``invalid-job-param-value-{field}`` is the spec's own pattern (05-Mining-Protocol.md
§5.3.20 before PR #194 removed the suggested codes), with the spec's field names. Not checked:
``min_ntime`` (the declared job records no time; consensus judges the header time when a block
is submitted) and ``channel_id`` (the pool's channel table, not the declaration).

Tokens are single use: a job the pool committed to cannot be committed to again under the
same token (SRI: active tokens are single use).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from payouts.settlement.modes import ExpectedOutputs
from payouts.tx.compact import read_compact_size, ser_compact_size
from payouts.tx.merkle import merkle_path
from payouts.tx.script import bip34_height
from sv2.coinbase_only import CoinbaseOnlyGrant, check_coinbase_only
from sv2.declared_job import DeclaredJob
from sv2.distribution_book import DistributionBook
from sv2.job_errors import (
    INVALID_PAYOUT_DISTRIBUTION,
    INVALID_TOKEN,
    MAX_COINBASE_PREFIX,
    JobRejected,
    param_error,
)
from sv2.messages.mining import (
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
)
from sv2.messages.payouts import distribution_id_of
from sv2.version_bits import (
    BIP320_VERSION_ROLLING_BITS,
    BIP323_GENERAL_PURPOSE_BITS,
    VERSION_FIXED_BITS,
    version_matches,
)


class DeclaredJobs(Protocol):
    """What the check needs from the JD server (``JobDeclarationServer`` has it)."""

    @property
    def book(self) -> DistributionBook: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    def declared_job(self, token: bytes) -> DeclaredJob | None: ...

    def token_refusal(self, token: bytes) -> str | None: ...

    # Coinbase-only mode (sv2.coinbase_only): tokens allocated without DECLARE_TX_DATA, the
    # settlement layer's output builder and the chain's subsidy halving interval.

    @property
    def expected(self) -> ExpectedOutputs: ...

    @property
    def halving(self) -> int: ...

    def coinbase_only_grant(self, token: bytes) -> CoinbaseOnlyGrant | None: ...

    def spend_token(self, token: bytes) -> None: ...


class CustomJobRejected(JobRejected):
    """A SetCustomMiningJob that does not match its declaration; ``code`` is the reply's."""


def check_custom_job(
    msg: SetCustomMiningJob,
    job: DeclaredJob,
    book: DistributionBook | None = None,
    now: float = 0.0,
) -> None:
    """Compare ``msg`` with the declared ``job``, field by field (table in the module
    docstring). Raises :class:`CustomJobRejected` with the code of the first mismatch."""
    if msg.prev_hash != job.prev_hash:
        raise CustomJobRejected(param_error("prev_hash"), "not the declared job's tip")
    if msg.nbits != job.bits:
        raise CustomJobRejected(param_error("nbits"))
    if not version_matches(job.version, msg.version):
        raise CustomJobRejected(
            param_error("version"),
            f"{msg.version:#010x} differs from the declared {job.version:#010x} outside the "
            "BIP323 general-purpose bits",
        )
    tx = job.coinbase.tx
    if msg.coinbase_tx_version != tx.version & 0xFFFFFFFF:
        raise CustomJobRejected(param_error("coinbase_tx_version"))
    script_sig = tx.inputs[0].script_sig
    height_push = bip34_height(job.height)
    prefix = bytes(msg.coinbase_prefix)
    if not (
        len(height_push) <= len(prefix) <= MAX_COINBASE_PREFIX and script_sig.startswith(prefix)
    ):
        raise CustomJobRejected(
            param_error("coinbase_prefix"),
            "must start the declared scriptSig, hold the BIP-34 height, be at most 8 bytes",
        )
    if msg.coinbase_tx_input_n_sequence != tx.inputs[0].sequence:
        raise CustomJobRejected(param_error("coinbase_tx_input_nSequence"))
    _check_distribution(msg, job, book, now)
    _check_outputs(msg, job)
    if msg.coinbase_tx_locktime != tx.locktime:
        raise CustomJobRejected(param_error("coinbase_tx_locktime"))
    expected_path = merkle_path([bytes(32), *(k.txid for k in job.txs)], 0)
    if list(msg.merkle_path) != expected_path:
        raise CustomJobRejected(param_error("merkle_path"), "not the declared transactions")


def _check_distribution(
    msg: SetCustomMiningJob, job: DeclaredJob, book: DistributionBook | None, now: float
) -> None:
    sent = distribution_id_of(msg)
    if sent is not None and sent != job.distribution_id:
        raise CustomJobRejected(
            INVALID_PAYOUT_DISTRIBUTION,
            f"distribution_id {sent}; the job was declared with {job.distribution_id}",
        )
    if book is not None and job.distribution_id is not None:
        try:
            book.lookup(job.distribution_id, now)
        except JobRejected as exc:
            # PR #203 §10: after a settlement the pool no longer commits to older windows.
            raise CustomJobRejected(exc.code, exc.details) from None


def _check_outputs(msg: SetCustomMiningJob, job: DeclaredJob) -> None:
    outs = job.coinbase.tx.outputs
    expected = ser_compact_size(len(outs)) + b"".join(o.serialize() for o in outs)
    got = bytes(msg.coinbase_tx_outputs)
    if got == expected:
        return
    if job.distribution_id is not None:
        # The payout outputs come first (PR #203 §5), right after the count; a change there is
        # a payout violation, a change elsewhere (count, template outputs) a field mismatch.
        payouts = b"".join(o.serialize() for o in job.payout_outputs)
        try:
            _, start = read_compact_size(got, 0)
        except (ValueError, IndexError):
            start = len(got)
        if got[start : start + len(payouts)] != payouts:
            raise CustomJobRejected(
                INVALID_PAYOUT_DISTRIBUTION, "payout outputs differ from the declaration"
            )
    raise CustomJobRejected(param_error("coinbase_tx_outputs"), "not the declared outputs")


class CustomJobChecker:
    """Answers SetCustomMiningJob on the pool's Mining connections from what ``jds`` accepted.

    ``check`` returns the reply to send: ``.Success`` with a fresh ``job_id`` (the token is
    then spent), or ``.Error`` with the code of the first failed check (nothing is spent).
    ``user_identity``: the Mining channel's user; a token declared by another user is refused
    like an unknown one (a miner cannot commit the pool to someone else's job).
    """

    MAX_REMEMBERED = 100_000

    def __init__(self, jds: DeclaredJobs) -> None:
        self.jds = jds
        self.accepted: OrderedDict[int, DeclaredJob] = OrderedDict()  # job_id -> job
        self.stats: dict[str, int] = {}
        self._used: OrderedDict[bytes, None] = OrderedDict()
        self._job_ids = itertools.count(1)

    def check(
        self, msg: SetCustomMiningJob, *, user_identity: str | None = None
    ) -> SetCustomMiningJobSuccess | SetCustomMiningJobError:
        try:
            job = self._lookup(bytes(msg.mining_job_token), user_identity)
            check_custom_job(msg, job, self.jds.book, self.jds.clock())
        except JobRejected as exc:
            return self._refuse(msg, exc)
        return self._accept(msg, job)

    def check_coinbase_only(
        self,
        msg: SetCustomMiningJob,
        *,
        connection_id: int,
        user_identity: str,
        extranonce_size: int,
        pool_job: DeclaredJob | None,
        stale_tip: bool,
        wall_time: float | None = None,
    ) -> SetCustomMiningJobSuccess | SetCustomMiningJobError:
        """A Coinbase-only ``msg`` (no declaration; :mod:`sv2.coinbase_only`): the token must be
        one ``user_identity`` allocated on a JD connection without ``DECLARE_TX_DATA``, unused;
        the coinbase is checked against the distribution alone. ``.Success`` spends the token
        and files the job in :attr:`accepted` as :meth:`check` does."""
        token = bytes(msg.mining_job_token)
        try:
            grant = self.jds.coinbase_only_grant(token)
            if grant is None or grant.user_identifier != user_identity:
                why = self.jds.token_refusal(token)
                raise CustomJobRejected(
                    INVALID_TOKEN,
                    why or "unknown or expired mining job token (Coinbase-only needs a token "
                    "allocated without DECLARE_TX_DATA; a Full-Template job must be declared)",
                )
            if token in self._used:
                raise CustomJobRejected(INVALID_TOKEN, "mining job token already used")
            job = check_coinbase_only(
                msg,
                connection_id=connection_id,
                user_identity=user_identity,
                extranonce_size=extranonce_size,
                book=self.jds.book,
                expected=self.jds.expected,
                now=self.jds.clock(),
                pool_job=pool_job,
                stale_tip=stale_tip,
                settlement_modes=grant.settlement_modes,
                wall_time=wall_time,
            )
        except JobRejected as exc:
            return self._refuse(msg, exc)
        # Single use beyond what _used remembers: the JD server forgets the token at once.
        self.jds.spend_token(token)
        return self._accept(msg, job)

    def _refuse(self, msg: SetCustomMiningJob, exc: JobRejected) -> SetCustomMiningJobError:
        self.stats[exc.code] = self.stats.get(exc.code, 0) + 1
        return SetCustomMiningJobError(msg.channel_id, msg.request_id, exc.code)

    def _accept(self, msg: SetCustomMiningJob, job: DeclaredJob) -> SetCustomMiningJobSuccess:
        self._used[job.token] = None
        job_id = next(self._job_ids) & 0xFFFFFFFF
        self.accepted[job_id] = job
        for d in (self._used, self.accepted):
            while len(d) > self.MAX_REMEMBERED:
                d.popitem(last=False)
        self.stats["accepted"] = self.stats.get("accepted", 0) + 1
        return SetCustomMiningJobSuccess(msg.channel_id, msg.request_id, job_id)

    def _lookup(self, token: bytes, user_identity: str | None) -> DeclaredJob:
        job = self.jds.declared_job(token)
        if job is None:
            # A token another JD server of the pool issued names a job only there (issue 15).
            why = self.jds.token_refusal(token)
            raise CustomJobRejected(INVALID_TOKEN, why or "unknown or expired mining job token")
        if user_identity is not None and job.user_identifier != user_identity:
            raise CustomJobRejected(INVALID_TOKEN, "unknown or expired mining job token")
        if token in self._used:
            raise CustomJobRejected(INVALID_TOKEN, "mining job token already used")
        return job


__all__ = [
    "BIP320_VERSION_ROLLING_BITS",
    "BIP323_GENERAL_PURPOSE_BITS",
    "VERSION_FIXED_BITS",
    "CustomJobChecker",
    "CustomJobRejected",
    "DeclaredJobs",
    "check_custom_job",
    "param_error",
]
