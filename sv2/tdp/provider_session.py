"""One connection of our Template Provider as a sans-I/O session (sv2-spec
07-Template-Distribution-Protocol.md), driven by :class:`sv2.tdp.server.TemplateProvider`.

A :class:`TpSession` holds what one client set up -- SetupConnection done, its
``CoinbaseOutputConstraints``, the templates sent to it -- and answers from that alone:

- ``SetupConnection``: protocol 2 only, version 2 in range, no flags (TDP defines none); a
  refusal is ``SetupConnection.Error`` and the end of the connection;
- a node template becomes the client's ``NewTemplate`` (and ``SetNewPrevHash`` for a future
  one), fitted to its constraints (:func:`fit_template`);
- ``RequestTransactionData`` is answered from the template that was sent
  (``template-id-not-found`` for ids this connection never got, ``stale-template-id`` for one
  on an old tip);
- ``SubmitSolution`` becomes a block -- header from the template, the client's coinbase bytes
  as sent, the template's transactions (:func:`sv2.block_rebuild.assemble_block`).

The node, the template ids shared by all connections, the poll and the submission are the
server's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace

from payouts.node.interface import BlockTemplate
from payouts.tx.consensus import MAX_BLOCK_SIGOPS_COST, MAX_BLOCK_WEIGHT
from payouts.tx.transaction import TxDecodeError
from sv2.block_rebuild import RebuiltBlock, assemble_block
from sv2.messages.base import Message
from sv2.messages.common import (
    PROTOCOL_TEMPLATE_DISTRIBUTION,
    SetupConnection,
    SetupConnectionSuccess,
)
from sv2.messages.template_distribution import (
    CoinbaseOutputConstraints,
    RequestTransactionData,
    RequestTransactionDataError,
    RequestTransactionDataSuccess,
    SubmitSolution,
)
from sv2.session import SV2_VERSION, Close, Disconnect, check_setup
from sv2.tdp.errors import STALE_TEMPLATE_ID, TEMPLATE_ID_NOT_FOUND
from sv2.template import JobTemplate

log = logging.getLogger(__name__)

SEGWIT_COINBASE_RESERVE = 1168  # §7.1: header, tx count, fixed and worst-case coinbase fields
KEEP_TEMPLATES = 32  # per connection: enough to tell "stale" from "never sent"


def fit_template(bt: BlockTemplate, c: CoinbaseOutputConstraints) -> BlockTemplate:
    """``bt`` with the transactions that fit next to the coinbase space ``c`` asks for (§7.1,
    segwit block: 1168 + 4 × size WU and ``c``'s sigops reserved); T loses the dropped fees.
    Transactions are dropped from the end (dropping a suffix never orphans a child: parents
    come first). Raises ``ValueError`` when the constraints alone do not fit in a block."""
    weight_left = (
        MAX_BLOCK_WEIGHT - SEGWIT_COINBASE_RESERVE - 4 * c.coinbase_output_max_additional_size
    )
    sigops_left = MAX_BLOCK_SIGOPS_COST - c.coinbase_output_max_additional_sigops
    if weight_left < 0 or sigops_left < 0:
        raise ValueError("CoinbaseOutputConstraints leave no room for a block")
    kept = 0
    for t in bt.transactions:
        weight_left -= t.tx.weight
        sigops_left -= t.sigops
        if weight_left < 0 or sigops_left < 0:
            break
        kept += 1
    if kept == len(bt.transactions):
        return bt
    dropped = sum(t.fee for t in bt.transactions[kept:])
    return replace(
        bt, transactions=bt.transactions[:kept], coinbase_value=bt.coinbase_value - dropped
    )


class TpSession:
    """One Template Provider connection, sans-I/O (see the module docstring). ``stats`` is
    the server's counter dict, shared."""

    def __init__(self, connection_id: int, stats: dict[str, int]) -> None:
        self.id = connection_id
        self.stats = stats
        self.setup = False
        self.constraints: CoinbaseOutputConstraints | None = None
        self.templates: OrderedDict[int, JobTemplate] = OrderedDict()

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def on_setup(self, msg: SetupConnection) -> list[Message | Close]:
        """§3.6.1: protocol 2 only, version 2 in range, no flags (TDP defines none)."""
        error = check_setup(msg, PROTOCOL_TEMPLATE_DISTRIBUTION)
        if error is not None:
            return [error, Close(f"SetupConnection refused: {error.error_code}")]
        self.setup = True
        return [SetupConnectionSuccess(used_version=SV2_VERSION, flags=0)]

    def on_constraints(self, msg: CoinbaseOutputConstraints) -> bool:
        """Take the client's constraints; whether they are its first (its first template is
        then a future one with its SetNewPrevHash, so it learns the tip)."""
        first = self.constraints is None
        self.constraints = msg
        return first

    def template_messages(
        self, bt: BlockTemplate, template_id: int, *, future: bool
    ) -> list[Message]:
        """``bt`` fitted to this client's constraints as ``NewTemplate`` ``template_id`` (and
        the ``SetNewPrevHash`` activating it, for a future one); the template is kept for
        RequestTransactionData and SubmitSolution. Constraints that leave no room for a block
        end the connection (:class:`~sv2.session.Disconnect`)."""
        assert self.constraints is not None
        try:
            jt = JobTemplate.from_block_template(fit_template(bt, self.constraints))
        except ValueError as exc:
            raise Disconnect(str(exc)) from None
        self.templates[template_id] = jt
        while len(self.templates) > KEEP_TEMPLATES:
            self.templates.popitem(last=False)
        out: list[Message] = [jt.new_template(template_id, future=future)]
        if future:
            out.append(jt.set_new_prev_hash(template_id))
        self._count("templates-sent")
        return out

    def on_request_tx_data(
        self, msg: RequestTransactionData, tip: bytes | None
    ) -> RequestTransactionDataSuccess | RequestTransactionDataError:
        """§7.4-§7.6, from the template this connection was sent; ``tip``: the tip the server
        last saw (a template on another one is stale)."""
        jt = self.templates.get(msg.template_id)
        if jt is None:
            self._count("txdata-unknown-template")
            return RequestTransactionDataError(msg.template_id, TEMPLATE_ID_NOT_FOUND)
        if tip is not None and jt.prev_hash != tip:
            self._count("txdata-stale-template")
            return RequestTransactionDataError(msg.template_id, STALE_TEMPLATE_ID)
        return RequestTransactionDataSuccess(
            template_id=msg.template_id,
            # The coinbase witness reserved value, where sv2-tp sends it (interop.md).
            excess_data=jt.witness_reserved,
            transaction_list=tuple(t.serialize() for t in jt.transactions),
        )

    def solution_block(self, msg: SubmitSolution) -> tuple[JobTemplate, RebuiltBlock] | None:
        """§7.7: the block of a SubmitSolution, with the template it was built on; ``None``
        (counted and logged) for a template never sent or a coinbase that does not decode."""
        jt = self.templates.get(msg.template_id)
        if jt is None:
            self._count("solution-unknown-template")
            log.warning("TP: SubmitSolution for template %d, never sent", msg.template_id)
            return None
        try:
            block = assemble_block(
                bytes(msg.coinbase_tx),
                jt.txids,
                jt.transactions,
                version=msg.version,
                prev_hash=jt.prev_hash,
                ntime=msg.header_timestamp,
                bits=jt.bits,
                nonce=msg.header_nonce,
            )
        except (TxDecodeError, ValueError) as exc:
            self._count("solution-bad-coinbase")
            log.warning("TP: SubmitSolution coinbase does not decode: %s", exc)
            return None
        return jt, block


__all__ = ["KEEP_TEMPLATES", "SEGWIT_COINBASE_RESERVE", "TpSession", "fit_template"]
