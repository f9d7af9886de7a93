"""The asyncio side of an SV2 server that speaks Noise NX as the responder (sv2-spec
04-Protocol-Security.md §4.5): listening, accepting, the connection limit, the handshake with
its timeout, one task per connection feeding an :class:`~sv2.connection.Sv2Connection`, the
idle timeout, the write-buffer bound, and the close and stop bookkeeping.

The Job Declaration Server (:mod:`sv2.jds.server`) and the Template Provider
(:mod:`sv2.tdp.server`) both subclass :class:`NoiseListener`. A subclass supplies what differs
between them: the peer object with its sans-I/O session (:meth:`NoiseListener._new_peer`), what
to do with the items a connection decoded (:meth:`NoiseListener._handle_items`: feed them to the
session, act on its outputs with :meth:`NoiseListener._output`), extra close reasons
(:meth:`NoiseListener._close_reason`) and clean-up (:meth:`NoiseListener._peer_closed`).

Anything a peer does wrong ends *its* connection: no exception escapes a connection task. Each
close is logged with its reason, on the subclass's logger:

- ``closed by peer``: EOF;
- ``handshake timeout``: act 1 did not arrive in time;
- ``timeout``: idle for ``idle_timeout`` (reading, or waiting for the peer to read);
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
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

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
from sv2.messages.base import Message
from sv2.noise import ServerIdentity
from sv2.noise_transport import FrameLimits
from sv2.session import Close, Disconnect

READ_CHUNK = 65_536  # one read; also the StreamReader's buffer limit

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What bounds a peer (seconds, bytes). ``None``: no bound."""

    handshake_timeout: float = 10.0
    idle_timeout: float | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE  # both directions (sv2.connection)
    max_buffered: int = DEFAULT_MAX_BUFFERED
    max_write_buffer: int | None = None  # a peer that does not read loses its connection
    max_connections: int = 1_000
    # Message types allowed above max_frame_size, e.g. a block's transactions (sv2.connection
    # JD_FRAME_LIMITS / TDP_FRAME_LIMITS); a peer must read a frame that large to get it.
    frame_limits: FrameLimits = field(default_factory=lambda: NO_FRAME_LIMITS)


@dataclass(slots=True)
class Peer:
    """One connection. Subclasses add their per-connection state."""

    id: int
    conn: Sv2Connection
    writer: asyncio.StreamWriter
    peer: str
    closing: bool = False  # set: finish the current batch, then close


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
        self._server: asyncio.Server | None = None
        self._peers: dict[int, P] = {}
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

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually listened on (port 0 picks a free one)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def connections(self) -> int:
        return len(self._peers)

    async def _listen(self) -> None:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self.port, limit=READ_CHUNK
        )

    async def stop(self) -> None:
        """Stop listening, close every connection, cancel the background tasks."""
        if self._server is not None:
            self._server.close()
        for p in list(self._peers.values()):
            p.closing = True
            p.writer.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A background task of this server, cancelled by :meth:`stop`."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- connections ----------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # stop() cancels connection tasks too
        pid = self._next_id
        self._next_id += 1
        lim = self.listener_limits
        if len(self._peers) >= lim.max_connections:
            self._count("refused-max-connections")
            writer.close()
            if task is not None:
                self._tasks.discard(task)
            return
        peer = str(writer.get_extra_info("peername"))
        conn = Sv2Connection.server(
            self._identity(),
            max_frame_size=lim.max_frame_size,
            max_buffered=lim.max_buffered,
            frame_limits=lim.frame_limits,
        )
        p = self._new_peer(pid, conn, writer, peer)
        self._peers[pid] = p
        self._count("connections")
        reason = "closed by peer"
        try:
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
            self.log.info("%s connection %d (%s) closed: %s", self.name, pid, peer, reason)
            self._count("disconnects")
            self._peers.pop(pid, None)
            self._peer_closed(p)
            conn.close()
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _idle(self, aw: Awaitable[T]) -> T:
        """``aw`` bounded by the idle timeout (TimeoutError: the connection closes)."""
        t = self.listener_limits.idle_timeout
        return await (aw if t is None else asyncio.wait_for(aw, t))

    async def _serve(self, p: P, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.listener_limits.handshake_timeout
        items: list[Any] = []
        while p.conn.state is State.HANDSHAKE:
            left = deadline - loop.time()
            if left <= 0:
                raise Disconnect("handshake timeout")
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), left)
            except TimeoutError:
                raise Disconnect("handshake timeout") from None
            if not data:
                return
            items = p.conn.receive_data(data)
            for it in items:
                if isinstance(it, HandshakeComplete):
                    p.writer.write(it.reply)  # act 2
        items = [it for it in items if not isinstance(it, HandshakeComplete)]
        while True:
            await self._handle_items(p, items)
            await self._idle(p.writer.drain())
            if p.closing:
                return
            data = await self._idle(reader.read(READ_CHUNK))
            if not data:
                return
            items = p.conn.receive_data(data)

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
