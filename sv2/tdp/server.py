"""A small Template Provider (sv2-spec 07-Template-Distribution-Protocol.md) backed by our
:class:`~payouts.node.interface.Node`: for the tests, and for miners who run a JD client without
sv2-tp (Bitcoin Core's own Template Provider needs the multiprocess build and its IPC socket).

Connections are handled by :class:`~sv2.listener.NoiseListener`, the base it shares with the
JDS (limits, handshake timeout, close reasons); what one connection set up and was sent is its
sans-I/O :class:`~sv2.tdp.provider_session.TpSession`; this module drives them, the node and
the poll. Per connection: Noise NX as the responder
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from payouts.node.interface import BlockTemplate, Node, NodeError
from payouts.node.submit import Submitted, submit_found_block
from sv2.connection import TDP_FRAME_LIMITS, MalformedMessage, Sv2Connection, UnknownMessage
from sv2.listener import Disconnect, ListenerLimits, NoiseListener, Peer
from sv2.messages.base import Message
from sv2.messages.common import SetupConnection
from sv2.messages.template_distribution import (
    CoinbaseOutputConstraints,
    RequestTransactionData,
    SubmitSolution,
)
from sv2.noise import ServerIdentity
from sv2.tdp.provider_session import TpSession, fit_template

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubmittedSolution:
    """A SubmitSolution turned into a block and handed to the node."""

    template_id: int
    block_hash: bytes  # internal byte order
    height: int
    raw_block: bytes
    reason: str | None  # None: the node accepted it now
    in_active_chain: bool = False  # asked when the node answered "duplicate"/"inconclusive"

    @property
    def accepted(self) -> bool:
        """Accepted now, or already known to the node and in its active chain (the JD server
        submitted the same block first: still found, payouts.node.submit)."""
        return Submitted(self.reason, self.in_active_chain).found


OnSolution = Callable[[SubmittedSolution], Awaitable[None] | None]


@dataclass(slots=True)
class _Client(Peer):
    """A connection's socket side and its session."""

    session: TpSession = field(kw_only=True)

    @property
    def constraints(self) -> CoinbaseOutputConstraints | None:
        """What this client announced (the session's)."""
        return self.session.constraints


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
            if c.session.constraints is None or c.closing:
                continue
            try:
                self._send_template(c, bt, future=new_tip)
            except Disconnect as exc:
                # Called from the poll or from another client's task: only this client goes.
                log.info("TP connection %d: %s", c.id, exc.reason)
                c.closing = True
                c.writer.transport.abort()

    def _send_template(self, c: _Client, bt: BlockTemplate, *, future: bool) -> None:
        for msg in c.session.template_messages(bt, next(self._template_ids), future=future):
            self._write(c, msg)

    # -- connections --------------------------------------------------------------------------

    def _identity(self) -> ServerIdentity:
        return self.identity

    def _new_peer(
        self, peer_id: int, conn: Sv2Connection, writer: asyncio.StreamWriter, peer: str
    ) -> _Client:
        return _Client(peer_id, conn, writer, peer, session=TpSession(peer_id, self.stats))

    def _close_reason(self, exc: Exception) -> str | None:
        return f"node error: {exc.reason}" if isinstance(exc, NodeError) else None

    def _is_set_up(self, c: _Client, items: list[Any]) -> bool:
        return c.session.setup and not c.closing

    async def _handle_items(self, c: _Client, items: list[Any]) -> None:
        for it in items:
            if isinstance(it, MalformedMessage):
                raise Disconnect(f"malformed {it.frame.msg_type:#04x}: {it.error.reason}")
            if not isinstance(it, UnknownMessage):
                await self._dispatch(c, it)

    async def _dispatch(self, c: _Client, msg: Message) -> None:
        session = c.session
        if not session.setup:
            if not isinstance(msg, SetupConnection):
                raise Disconnect(f"{msg.NAME} before SetupConnection")
            for out in session.on_setup(msg):
                self._output(c, out)
        elif isinstance(msg, CoinbaseOutputConstraints):
            await self._on_constraints(c, msg)
        elif isinstance(msg, RequestTransactionData):
            self._write(c, session.on_request_tx_data(msg, self._tip))
        elif isinstance(msg, SubmitSolution):
            await self._on_solution(c, msg)
        else:
            self._count(f"ignored:{msg.NAME}")

    async def _on_constraints(self, c: _Client, msg: CoinbaseOutputConstraints) -> None:
        first = c.session.on_constraints(msg)
        bt = await self.node.block_template()
        if bt.prev_hash != self._tip:
            self._apply(bt)  # a tip the poll has not seen yet: everyone moves, this client too
            return
        # The first answer is a future template and its SetNewPrevHash, so the client learns
        # the tip; later ones only re-fit the current tip to the new constraints.
        self._send_template(c, bt, future=first)

    async def _on_solution(self, c: _Client, msg: SubmitSolution) -> None:
        """§7.7: build the block from the template and the client's coinbase, and propagate it
        (SubmitSolution has no reply; the outcome is logged and recorded)."""
        solved = c.session.solution_block(msg)
        if solved is None:
            return
        jt, block = solved
        raw = block.serialize()
        if not block.meets_target():
            submitted = Submitted("high-hash")
        else:
            submitted = await submit_found_block(self.node, raw, block.block_hash)
        reason = submitted.reason
        found = SubmittedSolution(msg.template_id, block.block_hash, jt.height, raw, reason,
                                  submitted.in_active_chain)
        self.solutions.append(found)
        self._count("blocks-accepted" if found.accepted else "blocks-rejected")
        log.info(
            "TP: block %s from template %d: %s",
            block.header.hash_hex,
            msg.template_id,
            "accepted" if reason is None else
            f"{reason} (in the active chain)" if found.accepted else reason,
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
