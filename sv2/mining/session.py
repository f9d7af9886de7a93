"""The sans-I/O Mining Protocol server session (sv2-spec 05-Mining-Protocol.md): one per
connection, in the h11 style of :mod:`sv2.jds.session`. :meth:`MiningSession.receive` takes a
decoded item and returns what to do: messages to send, :class:`~sv2.session.Close`,
:class:`~sv2.mining.events.AcceptedShare` (credit, then acknowledge once durable) and
:class:`~sv2.mining.events.BlockCandidate` (submit to the node). It never touches a socket,
the node or the store.

Flow (§5.3): ``SetupConnection`` (protocol 0; flags ``REQUIRES_STANDARD_JOBS``,
``REQUIRES_WORK_SELECTION``, ``REQUIRES_VERSION_ROLLING``), optionally ``RequestExtensions``
(0x0003 for Coinbase-only TLVs, PR #203 §2), channels (§5.3.2-§5.3.6), jobs -- the pool's own
(``NewMiningJob``/``NewExtendedMiningJob`` + ``SetNewPrevHash``) or the client's
(``SetCustomMiningJob``, checked by :class:`~sv2.custom_job.CustomJobChecker` against what the
JD server accepted) -- and shares (§5.3.11-§5.3.14), checked in the order of
:data:`~sv2.mining.errors.SUBMIT_ERRORS`. A refused share changes nothing but a counter.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from hashlib import sha256 as _sha256
from typing import Any

from sv2.coinbase_only import credited_revenue
from sv2.connection import MalformedMessage, Received, UnknownMessage
from sv2.job_errors import INVALID_PAYOUT_DISTRIBUTION
from sv2.messages.base import Message
from sv2.messages.common import (
    PROTOCOL_MINING,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.messages.extensions import (
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
)
from sv2.messages.mining import (
    MINING_FLAG_REQUIRES_STANDARD_JOBS,
    MINING_FLAG_REQUIRES_VERSION_ROLLING,
    MINING_FLAG_REQUIRES_WORK_SELECTION,
    CloseChannel,
    MiningSetNewPrevHash,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    UpdateChannel,
    UpdateChannelError,
)
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS, distribution_id_of
from sv2.mining import errors as E
from sv2.mining.channels import Channel, ExtranonceSpaceExhausted
from sv2.mining.events import AcceptedShare, BlockCandidate
from sv2.mining.jobs import HEADER, MiningJob
from sv2.mining.shared import MiningShared
from sv2.mining.targets import (
    MAX_DIFFICULTY,
    Vardiff,
    difficulty_for_hashrate,
    min_difficulty_for,
    target_bytes,
    target_from_bytes,
    target_of,
)
from sv2.session import (
    CLOSE,
    SETUP_UNSUPPORTED_FLAGS,
    SV2_VERSION,
    Close,
    Disconnect,
    check_setup,
)

log = logging.getLogger(__name__)

SUPPORTED_FLAGS = (
    MINING_FLAG_REQUIRES_STANDARD_JOBS
    | MINING_FLAG_REQUIRES_WORK_SELECTION
    | MINING_FLAG_REQUIRES_VERSION_ROLLING
)
MAX_EXTRANONCE = 32  # B0_32: the whole extended extranonce (§5.3.5)

Output = Message | Close | AcceptedShare | BlockCandidate


class MiningSession:
    """One Mining Protocol connection, server side (module docstring)."""

    def __init__(self, connection_id: int, shared: MiningShared) -> None:
        self.id = connection_id
        self.shared = shared
        self.setup = False
        self.flags = 0
        self.negotiated: frozenset[int] = frozenset()
        self.channels: dict[int, Channel] = {}
        self._channel_ids = itertools.count(1)

    @property
    def work_selection(self) -> bool:
        return bool(self.flags & MINING_FLAG_REQUIRES_WORK_SELECTION)

    # -- entry points ---------------------------------------------------------------------------

    def receive(self, item: Received) -> list[Output]:
        """Handle one decoded item (raises :class:`Disconnect` for a protocol violation)."""
        if type(item) is SubmitSharesExtended and self.setup:
            return self._on_submit(item)  # the message a pool gets most: straight to it
        if isinstance(item, MalformedMessage):
            raise Disconnect(f"malformed {item.frame.msg_type:#04x}: {item.error.reason}")
        if isinstance(item, UnknownMessage):
            self.shared.count("unknown-messages")
            return []
        if not isinstance(item, Message):
            return []
        if not self.setup:
            if not isinstance(item, SetupConnection):
                raise Disconnect(f"{item.NAME} before SetupConnection")
            return self._on_setup(item)
        handler = _HANDLERS.get(type(item))
        if handler is None:
            self.shared.count(f"ignored:{item.NAME}")
            return []
        return handler(self, item)

    def closed(self) -> None:
        """The connection ended: its channels close and free their prefixes."""
        for ch in self.channels.values():
            self.shared.allocator.release(ch.allocated_prefix)
        self.channels.clear()

    def pool_job_update(self) -> list[Output]:
        """The pool's job changed (new template or tip): a future job on every channel that
        takes pool jobs, then the SetNewPrevHash activating it (§5.3.15-§5.3.17)."""
        out: list[Output] = []
        for ch in self.channels.values():
            out += self._send_pool_job(ch)
        return out

    def tick(self) -> list[Message]:
        """Vardiff for channels whose shares stopped coming (called by the driver's timer)."""
        now = self.shared.clock()
        out: list[Message] = []
        for ch in self.channels.values():
            new = ch.vardiff.retarget(now)
            if new is not None:
                out.append(self._set_difficulty(ch, new))
        return out

    # -- setup and extensions -------------------------------------------------------------------

    def _on_setup(self, msg: SetupConnection) -> list[Output]:
        error = check_setup(msg, PROTOCOL_MINING, supported_flags=SUPPORTED_FLAGS)
        if error is None and msg.flags & MINING_FLAG_REQUIRES_WORK_SELECTION and (
            self.shared.jds is None
        ):
            # Work selection needs a JD server's declarations to check custom jobs against.
            error = SetupConnectionError(
                flags=MINING_FLAG_REQUIRES_WORK_SELECTION, error_code=SETUP_UNSUPPORTED_FLAGS
            )
        if error is not None:
            self.shared.count(f"setup-error:{error.error_code}")
            return [error, CLOSE]
        self.setup = True
        self.flags = msg.flags
        return [SetupConnectionSuccess(used_version=SV2_VERSION, flags=0)]

    def _on_request_extensions(self, msg: RequestExtensions) -> list[Output]:
        requested = list(dict.fromkeys(msg.requested_extensions))
        ok = [e for e in requested if e in self.shared.supported_extensions]
        if requested and not ok:
            return [RequestExtensionsError(msg.request_id, tuple(requested), ())]
        self.negotiated = frozenset(ok)
        return [RequestExtensionsSuccess(msg.request_id, tuple(ok))]

    # -- channels -------------------------------------------------------------------------------

    def _open(
        self, msg: OpenStandardMiningChannel | OpenExtendedMiningChannel
    ) -> Channel | OpenMiningChannelError:
        sh, pol = self.shared, self.shared.policy

        def refuse(code: str) -> OpenMiningChannelError:
            sh.count(f"open-error:{code}")
            return OpenMiningChannelError(msg.request_id, code)

        extended = isinstance(msg, OpenExtendedMiningChannel)
        if not sh.known_user(msg.user_identity):
            return refuse(E.UNKNOWN_USER)
        if math.isnan(msg.nominal_hash_rate) or msg.nominal_hash_rate < 0:
            return refuse(E.INVALID_HASH_RATE)
        floor = min_difficulty_for(target_from_bytes(msg.max_target), pol.difficulty_unit)
        if floor > MAX_DIFFICULTY:
            return refuse(E.MAX_TARGET_OUT_OF_RANGE)
        if isinstance(msg, OpenExtendedMiningChannel) and (
            msg.min_extranonce_size > pol.extranonce_size
        ):
            return refuse(E.EXTRANONCE_SIZE_TOO_LARGE)
        if not extended and self.work_selection:
            return refuse(E.STANDARD_CHANNELS_NOT_ALLOWED)
        if len(self.channels) >= pol.max_channels_per_connection:
            return refuse(E.TOO_MANY_CHANNELS)
        try:
            allocated = sh.allocator.allocate()
        except ExtranonceSpaceExhausted:
            return refuse(E.EXTRANONCE_SPACE_EXHAUSTED)
        if extended:
            prefix, rolled = allocated, pol.extranonce_size
        else:  # a standard channel rolls no extranonce: its prefix is all of it (§5.2.1)
            prefix, rolled = allocated + bytes(pol.extranonce_size), 0
        d = max(
            floor,
            difficulty_for_hashrate(
                msg.nominal_hash_rate,
                pol.shares_per_minute,
                pol.difficulty_unit,
                pol.initial_difficulty,
            ),
        )
        cid = next(self._channel_ids)
        ch = Channel(
            channel_id=cid,
            worker=f"{self.id}/{cid}",
            user_identity=msg.user_identity,
            extended=extended,
            extranonce_prefix=prefix,
            allocated_prefix=allocated,
            extranonce_size=rolled,
            difficulty=d,
            target=target_of(d, pol.difficulty_unit),
            max_target=target_from_bytes(msg.max_target),
            vardiff=Vardiff(
                d,
                pol.shares_per_minute,
                min_difficulty=floor,
                retarget_interval=pol.retarget_interval,
                window_start=sh.clock(),
            ),
        )
        self.channels[cid] = ch
        sh.count("channels-opened")
        return ch

    def _on_open_standard(self, msg: OpenStandardMiningChannel) -> list[Output]:
        ch = self._open(msg)
        if not isinstance(ch, Channel):
            return [ch]
        ok = OpenStandardMiningChannelSuccess(
            msg.request_id, ch.channel_id, target_bytes(ch.target), ch.extranonce_prefix, 0
        )
        return [ok, *self._send_pool_job(ch)]

    def _on_open_extended(self, msg: OpenExtendedMiningChannel) -> list[Output]:
        ch = self._open(msg)
        if not isinstance(ch, Channel):
            return [ch]
        ok = OpenExtendedMiningChannelSuccess(
            msg.request_id,
            ch.channel_id,
            target_bytes(ch.target),
            ch.extranonce_size,
            ch.extranonce_prefix,
            0,
        )
        return [ok, *self._send_pool_job(ch)]

    def _on_update(self, msg: UpdateChannel) -> list[Output]:
        """§5.3.7: a lower ``maximum_target`` MUST be reflected with SetTarget."""
        ch = self.channels.get(msg.channel_id)
        if ch is None:
            return [UpdateChannelError(msg.channel_id, E.INVALID_CHANNEL_ID)]
        unit = self.shared.policy.difficulty_unit
        floor = min_difficulty_for(target_from_bytes(msg.maximum_target), unit)
        if floor > MAX_DIFFICULTY:
            return [UpdateChannelError(msg.channel_id, E.MAX_TARGET_OUT_OF_RANGE)]
        ch.max_target = target_from_bytes(msg.maximum_target)
        ch.vardiff.min_difficulty = floor
        if ch.difficulty < floor:
            return [self._set_difficulty(ch, floor)]
        return []

    def _on_close(self, msg: CloseChannel) -> list[Output]:
        ch = self.channels.pop(msg.channel_id, None)
        if ch is None:
            self.shared.count("close-unknown-channel")
            return []
        self.shared.allocator.release(ch.allocated_prefix)
        self.shared.count("channels-closed")
        return []

    def _set_difficulty(self, ch: Channel, difficulty: int) -> SetTarget:
        ch.difficulty = ch.vardiff.difficulty = difficulty
        ch.target = target_of(difficulty, self.shared.policy.difficulty_unit)
        self.shared.count("set-target")
        return SetTarget(ch.channel_id, target_bytes(ch.target))

    # -- jobs -----------------------------------------------------------------------------------

    def _add_job(self, ch: Channel, job: MiningJob) -> None:
        ch.jobs[job.job_id] = job
        while len(ch.jobs) > self.shared.policy.jobs_per_channel:
            del ch.jobs[next(iter(ch.jobs))]

    def _send_pool_job(self, ch: Channel) -> list[Output]:
        declared = self.shared.pool_job
        if declared is None or self.work_selection:
            return []
        job = MiningJob(
            self.shared.next_job_id(),
            ch.channel_id,
            declared,
            ch.extranonce_prefix,
            min_ntime=self.shared.pool_job_time,
            parts=self.shared.parts(declared),
            version_rolling_allowed=True,
        )
        self._add_job(ch, job)
        ch.active_job = job.job_id
        if ch.extended:
            head, tail = job.coinbase_halves()
            new: Message = NewExtendedMiningJob(
                ch.channel_id, job.job_id, None, job.version, True, job.merkle_path, head, tail
            )
        else:
            new = NewMiningJob(ch.channel_id, job.job_id, None, job.version, job.merkle_root(b""))
        prev = MiningSetNewPrevHash(
            ch.channel_id, job.job_id, declared.prev_hash, job.min_ntime, declared.bits
        )
        return [new, prev]

    def _on_custom_job(self, msg: SetCustomMiningJob) -> list[Output]:
        sh = self.shared

        def refuse(code: str) -> list[Output]:
            sh.count(f"custom-job-error:{code}")
            return [SetCustomMiningJobError(msg.channel_id, msg.request_id, code)]

        ch = self.channels.get(msg.channel_id)
        if ch is None:
            return refuse(E.INVALID_CHANNEL_ID)
        if not ch.extended:
            return refuse(E.WRONG_CHANNEL_TYPE)  # §5.3.18: extended or group channels only
        if not self.work_selection or sh.checker is None or sh.jds is None:
            return refuse(E.WORK_SELECTION_NOT_ENABLED)
        sent_distribution = distribution_id_of(msg)
        if sent_distribution is not None and EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated:
            # PR #203 §2: a TLV of an extension this connection did not negotiate.
            return refuse(INVALID_PAYOUT_DISTRIBUTION)
        # Checks of this connection's own state come before the check that spends the token.
        token = bytes(msg.mining_job_token)
        pending = sh.jds.declared_job(token)
        if pending is None and sh.jds.coinbase_only_grant(token) is not None:
            return self._on_coinbase_only_job(msg, ch)
        if pending is not None and pending.user_identifier == ch.user_identity:
            if pending.distribution_id is not None and (
                EXT_NON_CUSTODIAL_PAYOUTS not in self.negotiated
            ):
                # Declared under 0x0003 on JD; PR #203 §2 needs it on this connection too.
                return refuse(INVALID_PAYOUT_DISTRIBUTION)
            if pending.coinbase.extranonce_size != len(ch.extranonce_prefix) + ch.extranonce_size:
                return refuse(E.EXTRANONCE_SIZE_MISMATCH)
        reply = sh.checker.check(msg, user_identity=ch.user_identity)
        if isinstance(reply, SetCustomMiningJobError):
            sh.count(f"custom-job-error:{reply.error_code}")
            return [reply]
        return self._custom_job_accepted(ch, msg, reply)

    def _on_coinbase_only_job(self, msg: SetCustomMiningJob, ch: Channel) -> list[Output]:
        """Coinbase-only mode (sv2-spec §6.1; PR #203 §2, §6; :mod:`sv2.coinbase_only`): no
        declaration, the coinbase is checked against the distribution alone and its shares are
        credited at :func:`~sv2.coinbase_only.credited_revenue`, not at the T it claims."""
        sh = self.shared
        assert sh.checker is not None and sh.jds is not None
        reply = sh.checker.check_coinbase_only(
            msg,
            connection_id=self.id,
            user_identity=ch.user_identity,
            extranonce_size=len(ch.extranonce_prefix) + ch.extranonce_size,
            pool_job=sh.pool_job,
            stale_tip=sh.is_stale(msg.prev_hash),
            wall_time=sh.wall_clock(),
        )
        if isinstance(reply, SetCustomMiningJobError):
            sh.count(f"custom-job-error:{reply.error_code}")
            return [reply]
        declared = sh.checker.accepted[reply.job_id]
        credit = credited_revenue(
            declared.revenue, declared.height, declared.prev_hash, sh.pool_job, sh.jds.halving
        )
        sh.count("coinbase-only-jobs-accepted")
        return self._custom_job_accepted(ch, msg, reply, revenue=credit)

    def _custom_job_accepted(
        self,
        ch: Channel,
        msg: SetCustomMiningJob,
        reply: SetCustomMiningJobSuccess,
        revenue: int | None = None,
    ) -> list[Output]:
        """The channel's job for an accepted SetCustomMiningJob (§5.3.19); ``revenue``: the T
        its shares are credited at, when not the job's own."""
        sh = self.shared
        assert sh.checker is not None
        declared = sh.checker.accepted.pop(reply.job_id)
        job = MiningJob(
            sh.next_job_id(),
            ch.channel_id,
            declared,
            ch.extranonce_prefix,
            min_ntime=msg.min_ntime,
            parts=sh.parts(declared),
            version_rolling_allowed=True,
            custom=True,
            merkle_path=tuple(msg.merkle_path),
        )
        if revenue is not None:
            job.revenue = revenue
        self._add_job(ch, job)
        sh.count("custom-jobs-accepted")
        return [SetCustomMiningJobSuccess(msg.channel_id, msg.request_id, job.job_id)]

    # -- shares ---------------------------------------------------------------------------------

    def _on_submit(self, msg: SubmitSharesStandard | SubmitSharesExtended) -> list[Output]:
        """§5.3.11-§5.3.14; the checks run in :data:`~sv2.mining.errors.SUBMIT_ERRORS` order."""
        sh = self.shared
        ch = self.channels.get(msg.channel_id)
        code, out = self._check_share(ch, msg)
        if code is not None:
            sh.count(f"share-rejected:{code}")
            if ch is not None:
                ch.rejected += 1
            return [*out, SubmitSharesError(msg.channel_id, msg.sequence_number, code)]
        return out

    def _check_share(
        self, ch: Channel | None, msg: SubmitSharesStandard | SubmitSharesExtended
    ) -> tuple[str | None, list[Output]]:
        sh = self.shared
        if ch is None:
            return E.INVALID_CHANNEL_ID, []
        job = ch.jobs.get(msg.job_id)
        if job is None:
            return E.INVALID_JOB_ID, []
        if job.prev_hash in sh.stale_tips or (  # MiningShared.is_stale, inlined
            not job.custom and ch.active_job is not None and job.job_id != ch.active_job
        ):
            return E.STALE_SHARE, []
        if isinstance(msg, SubmitSharesExtended):
            if not ch.extended:
                return E.WRONG_CHANNEL_TYPE, []
            extranonce = msg.extranonce
        elif ch.extended:
            return E.WRONG_CHANNEL_TYPE, []
        else:
            extranonce = b""
        if len(extranonce) != job.miner_extranonce_size:
            return E.INVALID_EXTRANONCE_SIZE, []
        version = msg.version
        if (job.version ^ version) & job.version_mask:  # MiningJob.version_ok, inlined
            return E.INVALID_VERSION, []
        now = sh.wall_clock()
        ntime, min_ntime = msg.ntime, job.min_ntime
        latest = (now if now > min_ntime else min_ntime) + sh.policy.max_ntime_ahead
        if not min_ntime <= ntime <= latest:
            return E.NTIME_OUT_OF_RANGE, []
        # MiningJob.share_hash, inlined: the header's double SHA-256 (internal byte order).
        header = HEADER.pack(version, job.prev_hash, job.merkle_root(extranonce), ntime,
                             job.bits, msg.nonce)
        h = _sha256(_sha256(header).digest()).digest()
        seen = job.seen
        if h in seen:
            return E.DUPLICATE_SHARE, []
        out: list[Output] = []
        value = int.from_bytes(h, "little")
        if value <= job.network_target:
            # A block is submitted whatever the channel target: a pool never drops one.
            seen.add(h)
            sh.count("block-candidates")
            out.append(BlockCandidate(job, extranonce, version, ntime, msg.nonce, h))
        if value > ch.target:
            return E.DIFFICULTY_TOO_LOW, out
        seen.add(h)
        ch.accepted += 1
        ch.last_sequence = msg.sequence_number
        stats = sh.stats  # MiningShared.count, inlined
        stats["shares-accepted"] = stats.get("shares-accepted", 0) + 1
        share = AcceptedShare(
            self.id,
            ch.channel_id,
            msg.sequence_number,
            ch.user_identity,
            ch.worker,
            ch.difficulty,
            job.job_id,
            job.revenue,
            int(now * 1000),
            h,
        )
        if out:
            out.insert(0, share)
        else:
            out.append(share)
        new = ch.vardiff.on_share(sh.clock())
        if new is not None:
            out.append(self._set_difficulty(ch, new))
        return None, out


_HANDLERS: dict[type[Message], Callable[[MiningSession, Any], list[Output]]] = {
    RequestExtensions: MiningSession._on_request_extensions,
    OpenStandardMiningChannel: MiningSession._on_open_standard,
    OpenExtendedMiningChannel: MiningSession._on_open_extended,
    UpdateChannel: MiningSession._on_update,
    CloseChannel: MiningSession._on_close,
    SetCustomMiningJob: MiningSession._on_custom_job,
    SubmitSharesStandard: MiningSession._on_submit,
    SubmitSharesExtended: MiningSession._on_submit,
}

__all__ = ["SUPPORTED_FLAGS", "MiningSession", "Output"]
