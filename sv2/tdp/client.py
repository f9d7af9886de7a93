"""An asyncio Template Distribution client: a JD client's own connection to a Template Provider
(sv2-spec 07-Template-Distribution-Protocol.md; SRI's JDC does the same against sv2-tp).

1. TCP + Noise NX: the TP is the responder and its certificate must be signed by
   ``authority_pubkey`` (sv2-spec §4.5), exactly as on the JD connection
   (:class:`sv2.client.ClientSession` is shared);
2. ``SetupConnection`` (protocol 2 = Template Distribution, version 2, no flags);
3. ``CoinbaseOutputConstraints`` (§7.1) -- with extension 0x0003 computed from the pool's first
   ``SetPayoutDistribution`` (PR #203: not before it; the JD client computes them); sent
   again with :meth:`TemplateDistributionClient.set_constraints` when the distribution changes;
4. ``NewTemplate`` / ``SetNewPrevHash`` pushed by the TP: future templates wait for the
   SetNewPrevHash naming them (:class:`sv2.tdp.state.TemplateBook`);
5. ``RequestTransactionData`` for the template a job is built on (§7.4-§7.6); the transactions
   go into ``DeclareMiningJob.wtxid_list`` and answer ProvideMissingTransactions;
6. ``SubmitSolution`` (§7.7) once a block is found: the TP MUST propagate it.

What the messages mean is the sans-I/O :class:`~sv2.tdp.session.TdpSession`; this module
sends, waits and reports. The client implements :class:`sv2.template.TemplateSource`, so
``payouts jdc run --tp`` declares on the TP's templates exactly as on a node's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import ClassVar

from sv2.client import ClientSession, Progress
from sv2.connection import TDP_FRAME_LIMITS
from sv2.messages.base import Message
from sv2.messages.template_distribution import (
    CoinbaseOutputConstraints,
    NewTemplate,
    RequestTransactionDataError,
    RequestTransactionDataSuccess,
    SetNewPrevHash,
)
from sv2.noise_transport import FrameLimits
from sv2.solution import Solution
from sv2.tdp.errors import (
    TdpConnectionLost,
    TdpError,
    TdpSetupRejected,
    TdpTimeout,
    TransactionDataUnavailable,
)
from sv2.tdp.session import TdpSession, TemplateActive
from sv2.tdp.state import TemplateBook
from sv2.template import JobTemplate

log = logging.getLogger(__name__)


class TemplateDistributionClient(ClientSession):
    """A connection to a Template Provider. Use ``async with`` after setting
    ``constraints`` or call :meth:`connect` with them.

    ``authority_pubkey``: the TP's 32-byte x-only authority key (``None`` accepts any TP:
    encrypted but unauthenticated -- only for tests). ``retries``: how often :meth:`template`
    retries when the template it asked transactions for was replaced meanwhile.
    """

    TIMEOUT: ClassVar[type[TdpError]] = TdpTimeout
    LOST: ClassVar[type[TdpError]] = TdpConnectionLost
    REJECTED: ClassVar[type[TdpError]] = TdpSetupRejected
    READER_NAME: ClassVar[str] = "tdp-reader"
    LOG_PREFIX: ClassVar[str] = "TDP"
    # RequestTransactionData.Success carries every transaction of the template.
    FRAME_LIMITS: ClassVar[FrameLimits] = TDP_FRAME_LIMITS

    def __init__(
        self,
        host: str,
        port: int,
        authority_pubkey: bytes | None,
        *,
        constraints: CoinbaseOutputConstraints | None = None,
        timeout: float = 10.0,
        template_timeout: float = 30.0,
        retries: int = 3,
        progress: Progress | None = None,
        vendor: str = "payouts-jdc",
    ) -> None:
        super().__init__(host, port, authority_pubkey, timeout=timeout, progress=progress)
        self.session = TdpSession(constraints=constraints, vendor=vendor, stats=self.stats)
        self.template_timeout = template_timeout
        self.retries = retries

    @property
    def book(self) -> TemplateBook:
        """Which template is active (the session's)."""
        return self.session.book

    @property
    def constraints(self) -> CoinbaseOutputConstraints | None:
        return self.session.constraints

    async def connect(self, constraints: CoinbaseOutputConstraints | None = None) -> None:
        """Connect, handshake, SetupConnection, then CoinbaseOutputConstraints (§7: "MUST
        immediately send"; the TP answers with its best template). Raises
        :class:`~sv2.tdp.errors.TdpSetupRejected`, ``TdpTimeout``, ``TdpConnectionLost`` or a
        :class:`~sv2.connection.HandshakeFailed`."""
        c = constraints or self.constraints
        if c is None:
            raise TdpError(
                "CoinbaseOutputConstraints are needed before connecting to a Template Provider "
                "(with 0x0003 they come from the pool's first SetPayoutDistribution)",
                code="no-constraints",
            )
        await self._open()
        await self._setup_connection(self.session.setup_connection(self.host, self.port))
        self.set_constraints(c)

    def set_constraints(self, constraints: CoinbaseOutputConstraints) -> None:
        """Send CoinbaseOutputConstraints (again: the distribution, and so the space the
        coinbase needs, changed)."""
        self._send(self.session.set_constraints(constraints))
        self._say(
            "CoinbaseOutputConstraints sent to the Template Provider: size="
            f"{constraints.coinbase_output_max_additional_size} "
            f"sigops={constraints.coinbase_output_max_additional_sigops}"
        )

    # -- templates ----------------------------------------------------------------------------

    async def wait_for_template(
        self, *, newer_than: int | None = None, timeout: float | None = None
    ) -> tuple[NewTemplate, SetNewPrevHash]:
        """The active template and its SetNewPrevHash, once there is one with an id above
        ``newer_than``."""
        limit = self.template_timeout if timeout is None else timeout

        def ready() -> bool:
            cur = self.book.current()
            return self._closed_reason is not None or (
                cur is not None and (newer_than is None or cur[0].template_id > newer_than)
            )

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), limit)
            except TimeoutError:
                raise TdpTimeout(
                    f"no template from the Template Provider within {limit:g}s"
                ) from None
        cur = self.book.current()
        if cur is None or (newer_than is not None and cur[0].template_id <= newer_than):
            raise TdpConnectionLost(self._closed_reason or "connection closed")
        return cur

    async def transactions(self, template_id: int) -> tuple[bytes, ...]:
        """RequestTransactionData (§7.4) for ``template_id``: the raw transactions, coinbase
        excluded. Raises :class:`~sv2.tdp.errors.TransactionDataUnavailable` with the TP's
        code (``stale-template-id``, ``template-id-not-found``)."""
        cached = self.session.cached_transactions(template_id)
        if cached is not None:
            return cached
        req = self.session.request_transactions(template_id)
        reply = await self._request(
            req, "txdata", template_id, f"RequestTransactionData {template_id}"
        )
        assert isinstance(reply, RequestTransactionDataSuccess | RequestTransactionDataError)
        return self.session.transactions(template_id, reply)

    async def template(self, *, newer_than: int | None = None) -> JobTemplate:
        """The active template as a :class:`~sv2.template.JobTemplate` (NewTemplate +
        SetNewPrevHash + its transactions). When the TP replaced the template while its
        transactions were asked for (``stale-template-id``), the new one is taken."""
        for attempt in range(self.retries + 1):
            nt, snph = await self.wait_for_template(newer_than=newer_than)
            try:
                txs = await self.transactions(nt.template_id)
            except TransactionDataUnavailable:
                cur = self.book.current()
                replaced = cur is None or cur[0].template_id != nt.template_id
                if not replaced or attempt == self.retries:
                    raise
                self._count("template-replaced-while-fetching")
                continue
            return JobTemplate.from_tdp(nt, snph, txs,
                                        self.session.excess_data(nt.template_id))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def submit_solution(self, template: JobTemplate, solution: Solution) -> str | None:
        """SubmitSolution (§7.7): the full coinbase (BIP141 fields kept) and the header fields;
        the TP builds the block and propagates it. There is no reply: returns ``None``."""
        self._send(self.session.submit_solution(template, solution))
        self._count("solutions-submitted")
        self._say(f"SubmitSolution sent to the Template Provider: block {solution.header.hash_hex}")
        return None

    # -- routing ------------------------------------------------------------------------------

    def _receive(self, msg: Message) -> Sequence[object]:
        return self.session.receive(msg)

    async def _on_output(self, out: object) -> None:
        if isinstance(out, TemplateActive):
            self._announce(out.template)
        else:
            await super()._on_output(out)

    def _announce(self, t: NewTemplate) -> None:
        self._say(
            f"NewTemplate {t.template_id}{' (future, now active)' if t.future_template else ''}: "
            f"T={t.coinbase_tx_value_remaining} sat, {len(t.merkle_path)}-level merkle path"
        )


__all__ = ["TemplateDistributionClient"]
