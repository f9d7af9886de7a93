"""The asyncio Job Declaration client (sv2-spec 06-Job-Declaration-Protocol.md, Full-Template
mode) with extensions 0x0003 (PR #203), 0x4003 (settlement modes) and 0x4002 (the PR #202
per-job adapter). docs/jdc.md shows it from a miner's side.

The client is assembled from modules named for what they hold:

- :mod:`sv2.jdc.session`: TCP, Noise NX (authority key checked), the reader task, request
  futures keyed by ``request_id``;
- :mod:`sv2.jdc.distributions`: the pushed SetPayoutDistribution / SetSettlementMode state and
  the CoinbaseOutputConstraints it implies;
- :mod:`sv2.jdc.declaring`: tokens, coinbases, DeclareMiningJob, ProvideMissingTransactions,
  the per-job adapter;
- :mod:`sv2.jdc.fallback`: the fallback event; :mod:`sv2.jdc.solutions`: PushSolution;
- :mod:`sv2.jdc.errors`: the error classes.

This module holds the constructor, the JD-specific connection set-up and the message routing.

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
import logging
from collections.abc import Sequence
from typing import ClassVar

from payouts.distribution.fitting import Budget
from payouts.distribution.model import Distribution
from payouts.settlement.modes import DeploymentInfo, ExpectedOutputs, SettlementMode
from sv2.client import Progress
from sv2.connection import JD_FRAME_LIMITS
from sv2.jdc.constraints import OutputConstraints
from sv2.jdc.declaring import DeclaredJob, Declaring, _Outstanding
from sv2.jdc.distributions import OnConstraints
from sv2.jdc.errors import (
    DeclarationRejected,
    FallbackEvent,
    JdcConnectionLost,
    JdcError,
    JdcTimeout,
    SetupRejected,
)
from sv2.jdc.fallback import OnFallback
from sv2.jdc.jobs import DEFAULT_EXTRANONCE_SIZE, DEFAULT_TAG
from sv2.jdc.solutions import SolutionPushing
from sv2.messages.base import Message
from sv2.messages.common import (
    JD_FLAG_DECLARE_TX_DATA,
    PROTOCOL_JOB_DECLARATION,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.messages.extensions import (
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
)
from sv2.messages.job_declaration import (
    AllocateMiningJobTokenSuccess,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
)
from sv2.messages.payouts import (
    EXT_NON_CUSTODIAL_PAYOUTS,
    RequestPayoutOutputsError,
    RequestPayoutOutputsSuccess,
    SetPayoutDistribution,
)
from sv2.messages.settlement import EXT_SETTLEMENT_MODES, SetSettlementMode
from sv2.noise_transport import FrameLimits

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (EXT_NON_CUSTODIAL_PAYOUTS, EXT_SETTLEMENT_MODES)


class JobDeclarationClient(Declaring, SolutionPushing):
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
    output is anyone-can-spend on a chain that does not enforce it).
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
    ) -> None:
        super().__init__(host, port, authority_pubkey, timeout=timeout, progress=progress)
        self.node = node
        self.ctv_active: bool | None = None  # the node's last answer (None: not asked)
        self.requested_extensions = tuple(dict.fromkeys(extensions))
        self.user_identifier = user_identifier
        self.distribution_timeout = distribution_timeout
        self.extranonce_size = extranonce_size
        self.tag = tag
        self.expected_outputs = expected_outputs
        self.budget = budget
        self.max_redeclare = max_redeclare
        self.on_fallback = on_fallback
        self.on_constraints = on_constraints
        self.vendor = vendor

        self.negotiated: frozenset[int] = frozenset()
        self.distribution: Distribution | None = None
        self.previous_distribution: Distribution | None = None
        self.modes: dict[int, SettlementMode] = {}
        self.constraints: OutputConstraints | None = None
        self.fallback = asyncio.Event()
        self.fallback_events: list[FallbackEvent] = []
        self._outstanding: dict[int, _Outstanding] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, handshake, SetupConnection, negotiate extensions and (with 0x0003) wait for
        the first distribution. Raises :class:`SetupRejected`, :class:`JdcTimeout`,
        :class:`JdcConnectionLost` or a :class:`~sv2.connection.HandshakeFailed` (wrong
        authority key, expired certificate)."""
        await self._open()
        await self._setup_connection(
            PROTOCOL_JOB_DECLARATION,
            JD_FLAG_DECLARE_TX_DATA,
            vendor=self.vendor,
            device_id=self.user_identifier,
        )
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

    # -- routing ------------------------------------------------------------------------------

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
