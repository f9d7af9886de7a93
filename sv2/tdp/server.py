"""A small Template Provider (sv2-spec 07-Template-Distribution-Protocol.md) backed by our
:class:`~payouts.node.interface.Node`: for the tests, and for miners who run a JD client without
sv2-tp (Bitcoin Core's own Template Provider needs the multiprocess build and its IPC socket).

Connections are handled by :class:`~sv2.listener.NoiseListener`, the base it shares with the
JDS (limits, handshake timeout, close reasons). Per connection: Noise NX as the responder
(certificate signed by the authority key), ``SetupConnection`` (protocol 2), then the client's
``CoinbaseOutputConstraints``, answered at once with the best template (§7: "MUST immediately
reply") as a future ``NewTemplate`` plus the ``SetNewPrevHash`` naming it. Afterwards, polling
``node.block_template()``:

- new tip: a future ``NewTemplate`` and its ``SetNewPrevHash`` (§7.3: the client activates it);
- more revenue on the same tip: a ``NewTemplate`` with ``future_template`` unset (§7: "SHOULD
  push new block templates ... whenever the total fee ... increases");
- new constraints from the client: a fresh non-future ``NewTemplate`` fitting them.

Every template reserves what §7.1 demands for the coinbase: 1168 + 4 × size weight units and
the announced sigops. Transactions are dropped from the end of the node's template until the
rest fits (dropping a suffix never orphans a child: parents come first), and T shrinks by the
dropped fees.

``RequestTransactionData`` is answered from the template that was sent (``template-id-not-found``
for ids this connection never got, ``stale-template-id`` for one on an old tip), and
``SubmitSolution`` becomes a block -- header from the template, the client's coinbase bytes as
sent, the template's transactions -- submitted through ``node.submit_block``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from payouts.node.interface import BlockTemplate, Node, NodeError
from payouts.tx.block import BlockHeader, check_pow
from payouts.tx.compact import ser_compact_size
from payouts.tx.consensus import MAX_BLOCK_SIGOPS_COST, MAX_BLOCK_WEIGHT
from payouts.tx.merkle import merkle_root
from payouts.tx.transaction import Tx, TxDecodeError
from sv2.connection import TDP_FRAME_LIMITS, MalformedMessage, Sv2Connection, UnknownMessage
from sv2.listener import Disconnect, ListenerLimits, NoiseListener, Peer
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
from sv2.noise import ServerIdentity
from sv2.session import SV2_VERSION, check_setup
from sv2.tdp.errors import STALE_TEMPLATE_ID, TEMPLATE_ID_NOT_FOUND
from sv2.template import JobTemplate

log = logging.getLogger(__name__)

SEGWIT_COINBASE_RESERVE = 1168  # §7.1: header, tx count, fixed and worst-case coinbase fields
KEEP_TEMPLATES = 32  # per connection: enough to tell "stale" from "never sent"


@dataclass(frozen=True, slots=True)
class SubmittedSolution:
    """A SubmitSolution turned into a block and handed to the node."""

    template_id: int
    block_hash: bytes  # internal byte order
    height: int
    raw_block: bytes
    reason: str | None  # None: the node accepted it

    @property
    def accepted(self) -> bool:
        return self.reason is None


OnSolution = Callable[[SubmittedSolution], Awaitable[None] | None]


def fit_template(bt: BlockTemplate, c: CoinbaseOutputConstraints) -> BlockTemplate:
    """``bt`` with the transactions that fit next to the coinbase space ``c`` asks for (§7.1,
    segwit block: 1168 + 4 × size WU and ``c``'s sigops reserved); T loses the dropped fees.
    Raises ``ValueError`` when the constraints alone do not fit in a block."""
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


@dataclass(slots=True)
class _Client(Peer):
    setup: bool = False
    constraints: CoinbaseOutputConstraints | None = None
    templates: OrderedDict[int, JobTemplate] = field(default_factory=OrderedDict)


class TemplateProvider(NoiseListener[_Client]):
    """The Template Provider server. ``poll_interval`` (seconds, 0 = never) is how often the
    node's template is read; :meth:`refresh` does it on demand (what tests use)."""

    def __init__(
        self,
        *,
        identity: ServerIdentity,
        node: Node,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_interval: float = 1.0,
        handshake_timeout: float = 10.0,
        max_connections: int = 64,
        on_solution: OnSolution | None = None,
    ) -> None:
        # No idle timeout: a TDP client may wait minutes for the next template.
        super().__init__(
            host=host,
            port=port,
            limits=ListenerLimits(
                handshake_timeout=handshake_timeout,
                max_connections=max_connections,
                # RequestTransactionData.Success carries the template's transactions.
                frame_limits=TDP_FRAME_LIMITS,
            ),
        )
        self.identity = identity
        self.node = node
        self.poll_interval = poll_interval
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.on_solution = on_solution
        self.solutions: list[SubmittedSolution] = []
        self._template_ids = itertools.count(1)
        self._tip: bytes | None = None
        self._value = 0

    # -- lifecycle ----------------------------------------------------------------------------

    name = "TP"
    log = logging.getLogger(__name__)

    async def start(self) -> None:
        await self._listen()
        if self.poll_interval > 0:
            self._spawn(self._poll())

    async def __aenter__(self) -> TemplateProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- templates ----------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
            except NodeError as exc:
                self._count("node-errors")
                log.warning("TP: node error while polling: %s", exc.reason)

    async def refresh(self) -> None:
        """Read the node's template; on a new tip send every client a future template and its
        SetNewPrevHash, on more revenue a non-future template."""
        self._apply(await self.node.block_template())

    def _apply(self, bt: BlockTemplate) -> None:
        new_tip = bt.prev_hash != self._tip
        if not new_tip and bt.coinbase_value <= self._value:
            return
        self._tip, self._value = bt.prev_hash, bt.coinbase_value
        for c in list(self._peers.values()):
            if c.constraints is None or c.closing:
                continue
            try:
                self._send_template(c, bt, future=new_tip)
            except Disconnect as exc:
                # Called from the poll or from another client's task: only this client goes.
                log.info("TP connection %d: %s", c.id, exc.reason)
                c.closing = True
                c.writer.transport.abort()

    def _send_template(self, c: _Client, bt: BlockTemplate, *, future: bool) -> None:
        assert c.constraints is not None
        try:
            jt = JobTemplate.from_block_template(fit_template(bt, c.constraints))
        except ValueError as exc:
            raise Disconnect(str(exc)) from None
        tid = next(self._template_ids)
        c.templates[tid] = jt
        while len(c.templates) > KEEP_TEMPLATES:
            c.templates.popitem(last=False)
        self._write(c, jt.new_template(tid, future=future))
        if future:
            self._write(c, jt.set_new_prev_hash(tid))
        self._count("templates-sent")

    # -- connections --------------------------------------------------------------------------

    def _identity(self) -> ServerIdentity:
        return self.identity

    def _new_peer(
        self, peer_id: int, conn: Sv2Connection, writer: asyncio.StreamWriter, peer: str
    ) -> _Client:
        return _Client(peer_id, conn, writer, peer)

    def _close_reason(self, exc: Exception) -> str | None:
        return f"node error: {exc.reason}" if isinstance(exc, NodeError) else None

    async def _handle_items(self, c: _Client, items: list[Any]) -> None:
        for it in items:
            if isinstance(it, MalformedMessage):
                raise Disconnect(f"malformed {it.frame.msg_type:#04x}: {it.error.reason}")
            if not isinstance(it, UnknownMessage):
                await self._dispatch(c, it)

    async def _dispatch(self, c: _Client, msg: Message) -> None:
        if not c.setup:
            if not isinstance(msg, SetupConnection):
                raise Disconnect(f"{msg.NAME} before SetupConnection")
            self._on_setup(c, msg)
        elif isinstance(msg, CoinbaseOutputConstraints):
            await self._on_constraints(c, msg)
        elif isinstance(msg, RequestTransactionData):
            self._on_request_tx_data(c, msg)
        elif isinstance(msg, SubmitSolution):
            await self._on_solution(c, msg)
        else:
            self._count(f"ignored:{msg.NAME}")

    def _on_setup(self, c: _Client, msg: SetupConnection) -> None:
        """§3.6.1: protocol 2 only, version 2 in range, no flags (TDP defines none)."""
        error = check_setup(msg, PROTOCOL_TEMPLATE_DISTRIBUTION)
        if error is not None:
            self._write(c, error)
            raise Disconnect(f"SetupConnection refused: {error.error_code}")
        c.setup = True
        self._write(c, SetupConnectionSuccess(used_version=SV2_VERSION, flags=0))

    async def _on_constraints(self, c: _Client, msg: CoinbaseOutputConstraints) -> None:
        first = c.constraints is None
        c.constraints = msg
        bt = await self.node.block_template()
        if bt.prev_hash != self._tip:
            self._apply(bt)  # a tip the poll has not seen yet: everyone moves, this client too
            return
        # The first answer is a future template and its SetNewPrevHash, so the client learns
        # the tip; later ones only re-fit the current tip to the new constraints.
        self._send_template(c, bt, future=first)

    def _on_request_tx_data(self, c: _Client, msg: RequestTransactionData) -> None:
        jt = c.templates.get(msg.template_id)
        if jt is None:
            self._count("txdata-unknown-template")
            self._write(c, RequestTransactionDataError(msg.template_id, TEMPLATE_ID_NOT_FOUND))
            return
        if self._tip is not None and jt.prev_hash != self._tip:
            self._count("txdata-stale-template")
            self._write(c, RequestTransactionDataError(msg.template_id, STALE_TEMPLATE_ID))
            return
        self._write(
            c,
            RequestTransactionDataSuccess(
                template_id=msg.template_id,
                excess_data=b"",
                transaction_list=tuple(t.serialize() for t in jt.transactions),
            ),
        )

    async def _on_solution(self, c: _Client, msg: SubmitSolution) -> None:
        """§7.7: build the block from the template and the client's coinbase, and propagate it
        (SubmitSolution has no reply; the outcome is logged and recorded)."""
        jt = c.templates.get(msg.template_id)
        if jt is None:
            self._count("solution-unknown-template")
            log.warning("TP: SubmitSolution for template %d, never sent", msg.template_id)
            return
        try:
            coinbase = Tx.parse(msg.coinbase_tx)
        except (TxDecodeError, ValueError) as exc:
            self._count("solution-bad-coinbase")
            log.warning("TP: SubmitSolution coinbase does not decode: %s", exc)
            return
        root = merkle_root([coinbase.txid, *jt.txids])
        header = BlockHeader(
            msg.version, jt.prev_hash, root, msg.header_timestamp, jt.bits, msg.header_nonce
        )
        raw = b"".join(
            [
                header.serialize(),
                ser_compact_size(len(jt.transactions) + 1),
                bytes(msg.coinbase_tx),
                *(t.serialize() for t in jt.transactions),
            ]
        )
        if not check_pow(header.hash, jt.bits):
            reason: str | None = "high-hash"
        else:
            try:
                reason = await self.node.submit_block(raw)
            except NodeError as exc:
                reason = f"node error: {exc.reason}"
        found = SubmittedSolution(msg.template_id, header.hash, jt.height, raw, reason)
        self.solutions.append(found)
        self._count("blocks-accepted" if reason is None else "blocks-rejected")
        log.info(
            "TP: block %s from template %d: %s",
            header.hash_hex,
            msg.template_id,
            "accepted" if reason is None else reason,
        )
        if reason is None:
            # The tip moved: tell every client now rather than at the next poll.
            with contextlib.suppress(NodeError):
                await self.refresh()
        if self.on_solution is not None:
            res = self.on_solution(found)
            if inspect.isawaitable(res):
                await res


__all__ = ["SubmittedSolution", "TemplateProvider", "fit_template"]
