"""A Template Distribution client connection as a sans-I/O session (sv2-spec
07-Template-Distribution-Protocol.md): what the client asked for and what its Template Provider
pushed, without a socket.

:class:`TdpSession` builds the requests (``SetupConnection``, ``CoinbaseOutputConstraints``,
``RequestTransactionData``, ``SubmitSolution``), keeps the active template
(:class:`~sv2.tdp.state.TemplateBook`) and the transactions of the active template, and turns
each received message into outputs: a :class:`~sv2.session.Reply` for the request it answers,
:class:`TemplateActive` when a template became the one to work on, and
:data:`~sv2.session.STATE_CHANGED`. The asyncio client
(:class:`sv2.tdp.client.TemplateDistributionClient`) sends, waits and reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sv2.messages import template_distribution as td
from sv2.messages.base import Message
from sv2.messages.common import (
    PROTOCOL_TEMPLATE_DISTRIBUTION,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from sv2.session import STATE_CHANGED, Reply, StateChanged, setup_connection
from sv2.solution import Solution
from sv2.tdp.errors import TdpError, TdpProtocolError, TransactionDataUnavailable
from sv2.tdp.state import TemplateBook
from sv2.template import JobTemplate

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TemplateActive:
    """An output of :meth:`TdpSession.receive`: ``template`` is now the one to work on."""

    template: td.NewTemplate


Output = Reply | TemplateActive | StateChanged


class TdpSession:
    """One Template Distribution client connection, sans-I/O. ``stats`` is the client's
    counter dict, shared."""

    def __init__(
        self,
        *,
        constraints: td.CoinbaseOutputConstraints | None = None,
        vendor: str = "payouts-jdc",
        stats: dict[str, int] | None = None,
    ) -> None:
        self.constraints = constraints
        self.vendor = vendor
        self.stats: dict[str, int] = {} if stats is None else stats
        self.book = TemplateBook()
        self._txdata: dict[int, tuple[bytes, ...]] = {}
        self._excess: dict[int, bytes] = {}  # template id -> its RequestTransactionData excess_data

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- requests -------------------------------------------------------------------------------

    def setup_connection(self, host: str, port: int) -> SetupConnection:
        """SetupConnection: protocol 2; Template Distribution defines no flags (§3.6.1)."""
        return setup_connection(
            PROTOCOL_TEMPLATE_DISTRIBUTION, 0, host=host, port=port, vendor=self.vendor
        )

    def set_constraints(
        self, constraints: td.CoinbaseOutputConstraints
    ) -> td.CoinbaseOutputConstraints:
        """CoinbaseOutputConstraints (§7.1), now or again (the space the coinbase needs
        changed)."""
        self.constraints = constraints
        return constraints

    def cached_transactions(self, template_id: int) -> tuple[bytes, ...] | None:
        """The transactions of ``template_id`` if they were fetched already."""
        return self._txdata.get(template_id)

    def request_transactions(self, template_id: int) -> td.RequestTransactionData:
        return td.RequestTransactionData(template_id=template_id)

    def transactions(
        self,
        template_id: int,
        reply: td.RequestTransactionDataSuccess | td.RequestTransactionDataError,
    ) -> tuple[bytes, ...]:
        """The raw transactions (coinbase excluded) of a RequestTransactionData answer; an
        ``.Error`` raises :class:`TransactionDataUnavailable` with the provider's code
        (``stale-template-id``, ``template-id-not-found``). Kept only for the active
        template: old lists are never asked for again."""
        if isinstance(reply, td.RequestTransactionDataError):
            raise TransactionDataUnavailable(
                f"RequestTransactionData.Error {reply.error_code} for template {template_id}",
                code=reply.error_code,
            )
        txs = tuple(reply.transaction_list)
        cur = self.book.current()
        current = cur is not None and cur[0].template_id == template_id
        self._txdata = {template_id: txs} if current else {}
        self._excess = {template_id: bytes(reply.excess_data)}
        return txs

    def excess_data(self, template_id: int) -> bytes:
        """``RequestTransactionData.Success.excess_data`` of ``template_id`` (sv2-tp's coinbase
        witness reserved value, reference/interop.md), empty when none came."""
        return self._excess.get(template_id, b"")

    def submit_solution(self, template: JobTemplate, solution: Solution) -> td.SubmitSolution:
        """SubmitSolution (§7.7): the full coinbase (BIP141 fields kept) and the header
        fields of a solved ``template`` that came from this provider."""
        if template.template_id is None:
            raise TdpError(
                "this template did not come from a Template Provider (no template_id)",
                code="not-a-tdp-template",
            )
        h = solution.header
        return td.SubmitSolution(
            template_id=template.template_id,
            version=h.version & 0xFFFFFFFF,
            header_timestamp=h.time,
            header_nonce=h.nonce,
            coinbase_tx=solution.block.txs[0].serialize(),
        )

    # -- received messages ----------------------------------------------------------------------

    def receive(self, msg: Message) -> list[Output]:
        """Handle one message from the Template Provider; the outputs in order."""
        if isinstance(msg, SetupConnectionSuccess | SetupConnectionError):
            return [Reply("setup", 0, msg)]
        if isinstance(msg, td.NewTemplate):
            try:
                active = self.book.on_new_template(msg)
            except TdpProtocolError as exc:
                self._count(f"refused:{exc.code}")
                log.warning("TDP: %s", exc.message)
                return []
            self._count("templates")
            return [*self._activated(active), STATE_CHANGED]
        if isinstance(msg, td.SetNewPrevHash):
            active = self.book.on_set_new_prev_hash(msg)
            self._txdata.clear()
            if active is None:
                self._count("prev-hash-unknown-template")
                log.warning(
                    "TDP: SetNewPrevHash names template %d, which never came; waiting for the "
                    "next NewTemplate",
                    msg.template_id,
                )
            return [*self._activated(active), STATE_CHANGED]
        if isinstance(msg, td.RequestTransactionDataSuccess | td.RequestTransactionDataError):
            return [Reply("txdata", msg.template_id, msg)]
        self._count(f"ignored:{msg.NAME}")
        log.info("TDP: %s ignored", msg.NAME)
        return []

    @staticmethod
    def _activated(template: td.NewTemplate | None) -> list[Output]:
        return [] if template is None else [TemplateActive(template)]


__all__ = ["Output", "TdpSession", "TemplateActive"]
