"""The JD client's side of the pool's Mining Protocol connection (sv2-spec
05-Mining-Protocol.md §5.3; PR #203 §2): ``SetupConnection`` with ``REQUIRES_WORK_SELECTION``,
extension 0x0003 negotiated here as on the JD connection, one extended channel, then for each
declared job ``SetCustomMiningJob`` and the shares a CPU finds on it (enough on regtest, where a
share of difficulty 1 takes about two hashes).

The miner's coinbase is the declared one (:class:`~sv2.job_coinbase.JobCoinbase`) with the channel's
``extranonce_prefix`` and the miner's own bytes filling the declared extranonce, so the channel
must be opened before the job is declared with ``extranonce_size = len(prefix) +
channel extranonce_size`` (:attr:`PoolChannel.full_extranonce_size`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from sv2.client import ClientSession, Progress
from sv2.jdc.custom_job import build_set_custom_mining_job
from sv2.jdc.errors import JdcConnectionLost, JdcError, JdcTimeout, SetupRejected
from sv2.jdc.session import DeclaredJob
from sv2.messages.base import Message
from sv2.messages.common import PROTOCOL_MINING, SetupConnectionError, SetupConnectionSuccess
from sv2.messages.extensions import (
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
)
from sv2.messages.mining import (
    MINING_FLAG_REQUIRES_WORK_SELECTION,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesSuccess,
)
from sv2.messages.payouts import EXT_NON_CUSTODIAL_PAYOUTS
from sv2.session import STATE_CHANGED, Reply, setup_connection

MAX_TARGET = (1 << 256) - 1
_HEADER = struct.Struct("<I32s32sIII")


def _sha256d(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


class MiningRejected(JdcError):
    """The pool refused the channel or a custom job; ``code`` carries its error code."""

    code = "mining-rejected"


@dataclass(slots=True)
class ChannelState:
    """What the pool said about our channel, and its answers to our shares."""

    channel_id: int = 0
    target: int = 0
    extranonce_prefix: bytes = b""
    extranonce_size: int = 0
    accepted: int = 0  # SubmitShares.Success new_submits_accepted_count, summed
    accepted_difficulty: int = 0
    errors: dict[int, str] = field(default_factory=dict)  # sequence number -> error code


@dataclass(frozen=True, slots=True)
class SubmittedShare:
    """A share :meth:`PoolChannel.mine` sent (with the full extranonce, as PushSolution would
    carry it)."""

    sequence_number: int
    job_id: int
    extranonce: bytes  # channel prefix + the miner's bytes
    nonce: int
    ntime: int
    version: int
    block_hash: bytes  # the header hash, internal byte order


class PoolChannel(ClientSession):
    """A Mining Protocol connection to the pool with one extended channel (module docstring)."""

    TIMEOUT: ClassVar[type[JdcError]] = JdcTimeout
    LOST: ClassVar[type[JdcError]] = JdcConnectionLost
    REJECTED: ClassVar[type[JdcError]] = SetupRejected
    READER_NAME: ClassVar[str] = "jdc-mining-reader"
    LOG_PREFIX: ClassVar[str] = "JDC-MP"

    def __init__(
        self,
        host: str,
        port: int,
        authority_pubkey: bytes | None,
        *,
        user_identity: str,
        extranonce_size: int = 4,
        extensions: Sequence[int] = (EXT_NON_CUSTODIAL_PAYOUTS,),
        timeout: float = 10.0,
        progress: Progress | None = None,
        vendor: str = "payouts-jdc",
    ) -> None:
        super().__init__(host, port, authority_pubkey, timeout=timeout, progress=progress)
        self.user_identity = user_identity
        self.min_extranonce_size = extranonce_size
        self.extensions = tuple(extensions)
        self.vendor = vendor
        self.negotiated: frozenset[int] = frozenset()
        self.channel = ChannelState()
        self._seq = itertools.count(1)
        self._extranonce = itertools.count(1)
        self.submitted: list[SubmittedShare] = []

    @property
    def full_extranonce_size(self) -> int:
        """The extranonce a job mined on this channel must reserve: prefix + the miner's."""
        return len(self.channel.extranonce_prefix) + self.channel.extranonce_size

    async def connect(self) -> None:
        await self._open()
        await self._setup_connection(
            setup_connection(PROTOCOL_MINING, MINING_FLAG_REQUIRES_WORK_SELECTION,
                             host=self.host, port=self.port, vendor=self.vendor)
        )
        if self.extensions:
            reply = await self._request(RequestExtensions(1, self.extensions), "ext", 1,
                                        "RequestExtensions")
            if isinstance(reply, RequestExtensionsError):
                raise SetupRejected(f"RequestExtensions.Error {reply.unsupported_extensions}",
                                    code="extensions-rejected")
            assert isinstance(reply, RequestExtensionsSuccess)
            self.negotiated = frozenset(reply.supported_extensions)
        rid = next(self._ids)
        reply = await self._request(
            OpenExtendedMiningChannel(rid, self.user_identity, 0.0,
                                      MAX_TARGET.to_bytes(32, "little"), self.min_extranonce_size),
            "open", rid, "OpenExtendedMiningChannel")
        if isinstance(reply, OpenMiningChannelError):
            raise MiningRejected(f"OpenMiningChannel.Error {reply.error_code}",
                                 code=reply.error_code)
        assert isinstance(reply, OpenExtendedMiningChannelSuccess)
        ch = self.channel
        ch.channel_id, ch.extranonce_prefix = reply.channel_id, bytes(reply.extranonce_prefix)
        ch.extranonce_size = reply.extranonce_size
        ch.target = int.from_bytes(reply.target, "little")
        self._say(f"extended channel {ch.channel_id} open: extranonce prefix "
                  f"{ch.extranonce_prefix.hex()}, {ch.extranonce_size} bytes to roll")

    async def set_custom_job(self, job: DeclaredJob, *, coinbase_only: bool = False) -> int:
        """SetCustomMiningJob for a declared job (or, ``coinbase_only``, for a job built on a
        Coinbase-only token, sv2.jdc.client.JobDeclarationClient.coinbase_only_job); the
        pool's ``job_id``."""
        rid = next(self._ids)
        msg = build_set_custom_mining_job(
            job, channel_id=self.channel.channel_id, request_id=rid,
            distribution_tlv=EXT_NON_CUSTODIAL_PAYOUTS in self.negotiated,
            coinbase_only=coinbase_only)
        return await self.send_custom_job(msg)

    async def send_custom_job(self, msg: SetCustomMiningJob) -> int:
        """Send ``msg`` (its ``request_id`` from :meth:`next_request_id`); the pool's
        ``job_id``, or :class:`MiningRejected` with its error code."""
        rid = msg.request_id
        reply = await self._request(msg, "custom", rid, "SetCustomMiningJob")
        if isinstance(reply, SetCustomMiningJobError):
            raise MiningRejected(f"SetCustomMiningJob.Error {reply.error_code}",
                                 code=reply.error_code)
        assert isinstance(reply, SetCustomMiningJobSuccess)
        self._say(f"SetCustomMiningJob.Success: job {reply.job_id}")
        return reply.job_id

    def next_request_id(self) -> int:
        return next(self._ids)

    async def mine(self, job: DeclaredJob, job_id: int, shares: int,
                   max_hashes: int = 1 << 22) -> int:
        """CPU-hash ``job`` until ``shares`` shares meeting the channel target are submitted
        (or ``max_hashes`` tried); returns how many were submitted."""
        ch = self.channel
        parts, t = job.coinbase.parts, job.template
        path = tuple(t.merkle_path())
        version, ntime = t.version & 0xFFFFFFFF, t.time
        sent = hashes = 0
        while sent < shares and hashes < max_hashes:
            en = (next(self._extranonce) % (1 << (8 * ch.extranonce_size))).to_bytes(
                ch.extranonce_size, "big")
            h = _sha256d(parts.stripped_prefix + ch.extranonce_prefix + en
                         + parts.stripped_suffix)
            for sib in path:
                h = _sha256d(h + sib)
            head = _HEADER.pack(version, t.prev_hash, h, ntime, t.bits, 0)[:76]
            for nonce in range(1 << 16):
                hashes += 1
                digest = _sha256d(head + nonce.to_bytes(4, "little"))
                if int.from_bytes(digest, "little") <= ch.target:
                    seq = next(self._seq)
                    self._send(SubmitSharesExtended(ch.channel_id, seq, job_id, nonce, ntime,
                                                    version, en))
                    self.submitted.append(SubmittedShare(
                        seq, job_id, ch.extranonce_prefix + en, nonce, ntime, version, digest))
                    sent += 1
                    break
                if hashes % 4096 == 0:
                    await asyncio.sleep(0)
        await self.drain()
        return sent

    async def wait_answers(self, n: int, timeout: float | None = None) -> None:
        """Until ``n`` shares were acknowledged or refused."""
        ch = self.channel

        async def done() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: ch.accepted + len(ch.errors) >= n or self._closed_reason is not None)

        await self._wait(asyncio.ensure_future(done()), "SubmitShares", timeout)

    def _receive(self, msg: Message) -> Sequence[object]:
        ch = self.channel
        if isinstance(msg, SetupConnectionSuccess | SetupConnectionError):
            return [Reply("setup", 0, msg)]
        if isinstance(msg, RequestExtensionsSuccess | RequestExtensionsError):
            return [Reply("ext", msg.request_id, msg)]
        if isinstance(msg, OpenExtendedMiningChannelSuccess | OpenMiningChannelError):
            return [Reply("open", msg.request_id, msg)]
        if isinstance(msg, SetCustomMiningJobSuccess | SetCustomMiningJobError):
            return [Reply("custom", msg.request_id, msg)]
        if isinstance(msg, SubmitSharesSuccess):
            ch.accepted += msg.new_submits_accepted_count
            ch.accepted_difficulty += msg.new_shares_sum
            return [STATE_CHANGED]
        if isinstance(msg, SubmitSharesError):
            ch.errors[msg.sequence_number] = msg.error_code
            return [STATE_CHANGED]
        if isinstance(msg, SetTarget) and msg.channel_id == ch.channel_id:
            ch.target = int.from_bytes(msg.maximum_target, "little")
            return []
        self._count(f"ignored:{msg.NAME}")
        return []


__all__ = ["ChannelState", "MiningRejected", "PoolChannel", "SubmittedShare"]
