"""The asyncio side of an SV2 server that speaks Noise NX as the responder (sv2-spec
04-Protocol-Security.md §4.5): listening, accepting, the connection slots, the handshake and
setup deadlines, one task per connection feeding an :class:`~sv2.connection.Sv2Connection`, the
idle timeout, the write-buffer bound, and the close and stop bookkeeping.

A peer costs nothing to open a connection with: any 64 bytes are a valid Noise act 1, after
which the server has done its part of the handshake. So until its ``SetupConnection`` is
accepted (sv2-spec §3.6, the first message of every protocol) a connection is *pending*: it
holds one of the pending slots, which a flood can only take from itself
(:mod:`sv2.listener_slots`: separate slots for set-up connections, per-source-address limits,
eviction of the busiest address's oldest pending connection), and it must be set up within
``setup_timeout`` of being accepted: a deadline that incoming bytes do not move. Once set up,
the idle timeout counts from the last *complete* message, so a peer trickling single bytes of
a frame it never finishes cannot keep its slot either.

Sockets are accepted by :mod:`sv2.acceptor`, which hands each one over before asyncio builds
anything for it: a connection refused for want of a slot costs an ``accept`` and a ``close``.

The Job Declaration Server (:mod:`sv2.jds.server`), the Template Provider
(:mod:`sv2.tdp.server`) and any other SV2 server subclass :class:`NoiseListener`. A subclass
supplies what differs between them: the peer object with its sans-I/O session
(:meth:`NoiseListener._new_peer`), what to do with the items a connection decoded
(:meth:`NoiseListener._handle_items`: feed them to the session, act on its outputs with
:meth:`NoiseListener._output`), extra close reasons (:meth:`NoiseListener._close_reason`),
clean-up (:meth:`NoiseListener._peer_closed`) and, optionally, whether its session accepted
``SetupConnection`` (:meth:`NoiseListener._is_set_up`).

Anything a peer does wrong ends *its* connection: no exception escapes a connection task. Each
close is logged with its reason, on the subclass's logger:

- ``closed by peer``: EOF;
- ``handshake timeout``: act 1 did not arrive within ``handshake_timeout``;
- ``setup timeout``: not set up within ``setup_timeout`` of being accepted;
- ``timeout``: no complete message for ``idle_timeout``, or the peer did not read for as long;
- ``evicted: ...``: a pending connection whose slot a newer connection took
  (:mod:`sv2.listener_slots`);
- ``max connections``: set up when every set-up slot was taken;
- ``<code>: <message>``: the connection failed (:class:`~sv2.connection.ConnectionFailed`:
  Noise, transport, buffer limit);
- ``socket: ...``: an OS-level error;
- ``server stopping``: :meth:`NoiseListener.stop`;
- the :class:`Disconnect` reason the subclass raised, or its :meth:`_close_reason`;
- ``internal error: ...``: a bug; the traceback is logged and ``internal-errors`` counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from sv2.acceptor import Acceptor
from sv2.connection import (
    DEFAULT_MAX_BUFFERED,
    DEFAULT_MAX_FRAME_SIZE,
    NO_FRAME_LIMITS,
    ConnectionFailed,
    HandshakeComplete,
    State,
    Sv2Connection,
)
from sv2.errors import Sv2Error
from sv2.listener_slots import ConnectionSlots, source_address
from sv2.messages.base import Message
from sv2.messages.common import SetupConnection
from sv2.noise import ServerIdentity
from sv2.noise_transport import FrameLimits
from sv2.session import Close, Disconnect

READ_CHUNK = 65_536  # one read; also the StreamReader's buffer limit

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What bounds a peer (seconds, bytes, connections). ``None``: no bound.

    ``handshake_timeout``: from accept to Noise act 1. ``setup_timeout``: from accept to the
    accepted ``SetupConnection`` (handshake included); bytes do not extend either.
    ``idle_timeout``: from the last complete message (or waiting that long for the peer to read
    what it was sent). ``max_connections``: set-up connections; ``max_pending``: connections
    not set up yet, in slots of their own; ``max_connections_per_address`` (all of one source
    address's), ``max_pending_per_address`` (its pending ones) and
    ``connects_per_address_per_sec`` (its new connections): see :mod:`sv2.listener_slots`."""

    handshake_timeout: float = 10.0
    idle_timeout: float | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE  # both directions (sv2.connection)
    max_buffered: int = DEFAULT_MAX_BUFFERED
    max_write_buffer: int | None = None  # a peer that does not read loses its connection
    max_connections: int = 1_000
    # Message types allowed above max_frame_size, e.g. a block's transactions (sv2.connection
    # JD_FRAME_LIMITS / TDP_FRAME_LIMITS); a peer must read a frame that large to get it.
    frame_limits: FrameLimits = field(default_factory=lambda: NO_FRAME_LIMITS)
    setup_timeout: float | None = 10.0
    max_pending: int = 256
    max_connections_per_address: int | None = None
    max_pending_per_address: int | None = 32
    connects_per_address_per_sec: float | None = None


@dataclass(slots=True)
class Peer:
    """One connection. Subclasses add their per-connection state."""

    id: int
    conn: Sv2Connection
    writer: asyncio.StreamWriter
    peer: str
    closing: bool = False  # set: finish the current batch, then close
    set_up: bool = False  # SetupConnection accepted: holds a set-up slot, not a pending one
    source: str = ""  # the address its slots are counted under (sv2.listener_slots)
    close_reason: str | None = None  # why the server closed it from outside its task
    last_message: float = 0.0  # loop time of the last complete message (the idle timer)


P = TypeVar("P", bound=Peer)


class NoiseListener(Generic[P]):
    """Base of the SV2 servers. ``name`` prefixes log lines ("JDS connection 3 ... closed");
    ``log`` is the subclass's logger."""

    name: ClassVar[str] = "SV2"
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(self, *, host: str, port: int, limits: ListenerLimits) -> None:
        self.host, self.port = host, port
        self.listener_limits = limits
        self.stats: dict[str, int] = {}
        self.slots = ConnectionSlots(
            max_connections=limits.max_connections,
            max_pending=limits.max_pending,
            max_connections_per_address=limits.max_connections_per_address,
            max_pending_per_address=limits.max_pending_per_address,
            connects_per_address_per_sec=limits.connects_per_address_per_sec,
        )
        self._acceptor: Acceptor | None = None
        self._peers: dict[int, P] = {}
        self._closed_early: dict[int, str] = {}  # evicted before their streams existed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_id = 1

    # -- what a subclass supplies ---------------------------------------------------------------

    def _identity(self) -> ServerIdentity:
        raise NotImplementedError

    def _new_peer(
        self, peer_id: int, conn: Sv2Connection, writer: asyncio.StreamWriter, peer: str
    ) -> P:
        raise NotImplementedError

    async def _handle_items(self, p: P, items: list[Any]) -> None:
        """Act on what one read decoded (messages and events other than the handshake)."""
        raise NotImplementedError

    def _close_reason(self, exc: Exception) -> str | None:
        """The logged reason for an exception this server expects to end a connection (e.g. a
        node error); ``None``: an internal error."""
        return None

    def _peer_closed(self, p: P) -> None:
        """Clean-up after a connection ended (already out of :attr:`_peers`)."""

    def _is_set_up(self, p: P, items: list[Any]) -> bool:
        """Whether ``p``'s session accepted its ``SetupConnection``, asked after each batch
        of ``items`` handled while ``p`` is pending. By default: a ``SetupConnection`` was in
        the batch and the connection stays open (a refusal closes it); a subclass whose session
        knows says so instead."""
        return not p.closing and any(isinstance(it, SetupConnection) for it in items)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually listened on (port 0 picks a free one)."""
        if self._acceptor is None:
            raise RuntimeError("server not started")
        return self._acceptor.address

    @property
    def listening(self) -> bool:
        return self._acceptor is not None

    @property
    def connections(self) -> int:
        """Open connections: set up and pending."""
        return len(self._peers)

    @property
    def pending_connections(self) -> int:
        """Connections not set up yet (handshake or SetupConnection outstanding)."""
        return self.slots.pending

    async def _listen(self) -> None:
        if self._acceptor is not None:
            raise RuntimeError("already started")
        acceptor = Acceptor(self._accepted)
        await acceptor.open(self.host, self.port)
        self._acceptor = acceptor

    async def stop(self) -> None:
        """Stop listening, close every connection, cancel the background tasks."""
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
        for p in list(self._peers.values()):
            p.closing = True
            p.writer.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A background task of this server, cancelled by :meth:`stop`."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- connections ----------------------------------------------------------------------------

    def _accepted(self, sock: socket.socket, peername: Any) -> None:
        """A new connection's slot (:mod:`sv2.listener_slots`), decided before any stream, task
        or handshake exists for it: a refused connection costs an accept and a close."""
        pid = self._next_id
        self._next_id += 1
        source = source_address(peername)
        admission = self.slots.admit(pid, source, asyncio.get_running_loop().time())
        if admission.refused is not None:
            self._count(admission.refused)
            sock.close()
            return
        for ev in admission.evict:
            self._count(ev.counter)
            self._close_from_outside(ev.conn_id, ev.reason)
        self._spawn(self._connection(pid, source, peername, sock))

    async def _connection(self, pid: int, source: str, peername: Any, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
        except BaseException:  # the socket died (or stop()) before it had streams
            self.slots.release(pid)
            self._closed_early.pop(pid, None)
            sock.close()
            raise
        await self._serve_connection(pid, source, peername, reader, writer)

    async def _serve_connection(
        self,
        pid: int,
        source: str,
        peername: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        lim = self.listener_limits
        peer = str(peername)
        conn = Sv2Connection.server(
            self._identity(),
            max_frame_size=lim.max_frame_size,
            max_buffered=lim.max_buffered,
            frame_limits=lim.frame_limits,
        )
        p = self._new_peer(pid, conn, writer, peer)
        p.source = source
        p.close_reason = self._closed_early.pop(pid, None)  # evicted before this task ran
        self._peers[pid] = p
        self._count("connections")
        reason = "closed by peer"
        try:
            if p.close_reason is None:
                await self._serve(p, reader)
        except Disconnect as exc:
            reason = exc.reason
        except ConnectionFailed as exc:
            reason = f"{exc.code}: {exc.message}"
        except TimeoutError:
            reason = "timeout"
        except (ConnectionError, OSError) as exc:
            reason = f"socket: {exc}"
        except asyncio.CancelledError:
            reason = "server stopping"
        except Exception as exc:  # a bug must cost one connection, not the server
            known = self._close_reason(exc)
            if known is None:
                self.log.exception("%s connection %d: unexpected error", self.name, pid)
                self._count("internal-errors")  # the live-server fuzz job asserts it stays absent
                reason = f"internal error: {exc!r}"
            else:
                reason = known
        finally:
            reason = p.close_reason or reason
            self.log.info("%s connection %d (%s) closed: %s", self.name, pid, peer, reason)
            self._count("disconnects")
            self._peers.pop(pid, None)
            self.slots.release(pid)
            self._peer_closed(p)
            conn.close()
            with contextlib.suppress(Exception):
                writer.close()

    def _close_from_outside(self, pid: int, reason: str) -> None:
        """End connection ``pid`` now from another task (its own logs ``reason``)."""
        p = self._peers.get(pid)
        if p is None:  # admitted, its streams not made yet: it ends as soon as they are
            self._closed_early[pid] = reason
            return
        p.close_reason = reason
        p.closing = True
        p.writer.transport.abort()

    async def _idle(self, aw: Awaitable[T]) -> T:
        """``aw`` bounded by the idle timeout (TimeoutError: the connection closes)."""
        t = self.listener_limits.idle_timeout
        return await (aw if t is None else asyncio.wait_for(aw, t))

    async def _read(
        self, reader: asyncio.StreamReader, deadline: tuple[float, str] | None
    ) -> bytes:
        """One read, given up at ``deadline`` (loop time, and the close reason then)."""
        if deadline is None:
            return await reader.read(READ_CHUNK)
        at, reason = deadline
        left = at - asyncio.get_running_loop().time()
        if left <= 0:
            raise Disconnect(reason)
        try:
            return await asyncio.wait_for(reader.read(READ_CHUNK), left)
        except TimeoutError:
            raise Disconnect(reason) from None

    def _deadline(self, p: P, setup_by: float | None) -> tuple[float, str] | None:
        """When ``p``'s next read must have brought what it owes: its setup deadline while
        pending, the idle timeout counted from its last complete message, whichever is first."""
        idle = self.listener_limits.idle_timeout
        due = [] if idle is None else [(p.last_message + idle, "timeout")]
        if not p.set_up and setup_by is not None:
            due.append((setup_by, "setup timeout"))
        return min(due) if due else None

    async def _serve(self, p: P, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        lim = self.listener_limits
        accepted = loop.time()
        setup_by = None if lim.setup_timeout is None else accepted + lim.setup_timeout
        act1_by = accepted + lim.handshake_timeout
        if setup_by is not None and setup_by < act1_by:
            act1 = (setup_by, "setup timeout")
        else:
            act1 = (act1_by, "handshake timeout")
        items: list[Any] = []
        while p.conn.state is State.HANDSHAKE:
            data = await self._read(reader, act1)
            if not data:
                return
            items = p.conn.receive_data(data)
            for it in items:
                if isinstance(it, HandshakeComplete):
                    p.writer.write(it.reply)  # act 2
        p.last_message = loop.time()
        items = [it for it in items if not isinstance(it, HandshakeComplete)]
        while True:
            await self._handle_items(p, items)
            if not p.set_up and items and self._is_set_up(p, items):
                self._promote(p)
            await self._idle(p.writer.drain())
            if p.closing:
                return
            data = await self._read(reader, self._deadline(p, setup_by))
            if not data:
                return
            items = p.conn.receive_data(data)
            if items:  # a frame completed; bytes of an unfinished one do not count
                p.last_message = loop.time()

    def _promote(self, p: P) -> None:
        """``p`` is set up: move it to a set-up slot, or end it if there is none left."""
        if not self.slots.promote(p.id):
            self._count("refused-max-connections")
            raise Disconnect("max connections")
        p.set_up = True

    def _output(self, p: P, out: Message | Close) -> None:
        """Act on a session's output: write a message; a :class:`~sv2.session.Close` ends the
        connection once what came before is written (with a reason: now, logging it)."""
        if not isinstance(out, Close):
            self._write(p, out)
        elif out.reason is not None:
            raise Disconnect(out.reason)
        else:
            p.closing = True  # finish with what is queued, read no more

    def _write(self, p: P, msg: Message) -> None:
        """Encrypt and queue ``msg``; a peer whose unread data exceeds ``max_write_buffer`` is
        aborted (it cannot make us hold its backlog)."""
        if p.closing or p.writer.is_closing():
            return
        try:
            data = p.conn.send(msg)
        except Sv2Error as exc:  # e.g. larger than this connection's max_frame_size
            raise Disconnect(f"cannot send {msg.NAME}: {exc.message}") from None
        p.writer.write(data)
        bound = self.listener_limits.max_write_buffer
        transport = p.writer.transport
        if bound is not None and transport.get_write_buffer_size() > bound:
            self.log.info("%s connection %d does not read its data; closing", self.name, p.id)
            p.closing = True
            transport.abort()


__all__ = ["READ_CHUNK", "Disconnect", "ListenerLimits", "NoiseListener", "Peer"]
