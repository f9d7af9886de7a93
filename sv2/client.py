"""The asyncio side of an SV2 client connection, below the roles (the client counterpart of
:mod:`sv2.listener`): TCP, the Noise NX handshake, the reader task and request/response
pairing. Protocol-neutral, so the Job Declaration client (:class:`sv2.jdc.JobDeclarationClient`)
and the Template Distribution client (:class:`sv2.tdp.TemplateDistributionClient`) share it.

Layering as h11: the socket lives here; bytes go through a sans-I/O
:class:`~sv2.connection.Sv2Connection` (Noise NX as the initiator, the responder's certificate
checked against its authority key, sv2-spec 04-Protocol-Security.md §4.5), and what the
messages mean is the role's sans-I/O session (:class:`sv2.jdc.session.JdcSession`,
:class:`sv2.tdp.session.TdpSession`). One reader task decodes every frame and hands it to
:meth:`ClientSession._dispatch`, which the role implements by feeding its session: pushed
messages are handled at once, responses resolve the future registered under
``(kind, request_id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self, TypeVar

from payouts.errors import PayoutsError
from sv2.connection import (
    NO_FRAME_LIMITS,
    ConnectionFailed,
    HandshakeComplete,
    MalformedMessage,
    Sv2Connection,
    UnknownMessage,
)
from sv2.messages.base import Message
from sv2.messages.common import SetupConnection, SetupConnectionError, SetupConnectionSuccess
from sv2.noise_transport import FrameLimits
from sv2.session import Reply, StateChanged

log = logging.getLogger(__name__)

READ_CHUNK = 65_536

T = TypeVar("T")
Progress = Callable[[str], None]


class ClientSession:
    """TCP + Noise + the reader task of one client connection.

    Subclasses implement :meth:`_dispatch` and name their error classes (``TIMEOUT``,
    ``LOST``, ``REJECTED``) so that callers see protocol-specific codes.
    """

    TIMEOUT: ClassVar[type[PayoutsError]]
    LOST: ClassVar[type[PayoutsError]]
    REJECTED: ClassVar[type[PayoutsError]]
    READER_NAME: ClassVar[str]
    LOG_PREFIX: ClassVar[str]
    # Message types this role sends or receives above the 1 MiB default (sv2.connection).
    FRAME_LIMITS: ClassVar[FrameLimits] = NO_FRAME_LIMITS

    def __init__(
        self,
        host: str,
        port: int,
        authority_pubkey: bytes | None,
        *,
        timeout: float = 10.0,
        progress: Progress | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.authority_pubkey = authority_pubkey
        self.timeout = timeout
        self._progress = progress
        self.stats: dict[str, int] = {}

        self._conn: Sv2Connection | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._futures: dict[tuple[str, int], asyncio.Future[Message]] = {}
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._closed_reason: str | None = None

    # -- reporting ----------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        log.info("%s", line)
        if self._progress is not None:
            self._progress(line)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        """TCP, the Noise handshake, then the reader task. Raises ``LOST`` / ``TIMEOUT`` or a
        :class:`~sv2.connection.HandshakeFailed` (wrong authority key, expired certificate)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise self.LOST(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._reader, self._writer = reader, writer
        self._conn = Sv2Connection.client(self.authority_pubkey, frame_limits=self.FRAME_LIMITS)
        writer.write(self._conn.initiate())
        leftover = await self._handshake()
        self._say(f"noise handshake done with {self.host}:{self.port} (authority key checked)")
        self._task = asyncio.create_task(self._read_loop(), name=self.READER_NAME)
        if leftover:
            await self._dispatch_all(leftover)

    async def _handshake(self) -> list[Any]:
        assert self._reader is not None and self._conn is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise self.TIMEOUT("Noise handshake timed out")
            try:
                data = await asyncio.wait_for(self._reader.read(READ_CHUNK), left)
            except TimeoutError:
                raise self.TIMEOUT("Noise handshake timed out") from None
            if not data:
                raise self.LOST("the server closed the connection during the handshake")
            items = self._conn.receive_data(data)  # HandshakeFailed propagates as is
            for i, it in enumerate(items):
                if isinstance(it, HandshakeComplete):
                    return items[i + 1 :]

    async def _setup_connection(self, msg: SetupConnection) -> SetupConnectionSuccess:
        """Send the session's ``SetupConnection`` (:func:`sv2.session.setup_connection`) and
        wait for the reply; .Error raises ``REJECTED`` with code ``setup-<error_code>``."""
        reply = await self._request(msg, "setup", 0, "SetupConnection")
        if isinstance(reply, SetupConnectionError):
            raise self.REJECTED(
                f"SetupConnection.Error {reply.error_code} (flags {reply.flags:#x})",
                code=f"setup-{reply.error_code}",
            )
        assert isinstance(reply, SetupConnectionSuccess)
        self._say(f"SetupConnection.Success: version {reply.used_version}, flags {reply.flags:#x}")
        return reply

    async def connect(self) -> None:
        """Open, handshake and set up the role's connection (each subclass's own sequence)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (idempotent); outstanding requests fail."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_all("connection closed")
        if self._conn is not None:
            self._conn.close()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None

    async def drain(self) -> None:
        """Wait until written bytes are handed to the OS (e.g. before closing)."""
        if self._writer is not None:
            await self._writer.drain()

    # -- plumbing -----------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        if self._conn is None or self._writer is None or self._closed_reason is not None:
            raise self.LOST(self._closed_reason or "not connected")
        self._writer.write(self._conn.send(msg))

    def _expect(self, kind: str, request_id: int) -> asyncio.Future[Message]:
        if self._closed_reason is not None:
            raise self.LOST(self._closed_reason)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._futures[(kind, request_id)] = fut
        return fut

    async def _request(self, msg: Message, kind: str, request_id: int, what: str) -> Message:
        """Send ``msg`` and wait for the reply registered under ``(kind, request_id)``."""
        fut = self._expect(kind, request_id)
        self._send(msg)
        return await self._wait(fut, what)

    async def _wait(self, fut: asyncio.Future[T], what: str, timeout: float | None = None) -> T:
        try:
            return await asyncio.wait_for(fut, self.timeout if timeout is None else timeout)
        except TimeoutError:
            raise self.TIMEOUT(f"no answer to {what} within {self.timeout:g}s") from None

    def _resolve(self, kind: str, request_id: int, msg: Message) -> None:
        fut = self._futures.pop((kind, request_id), None)
        if fut is None or fut.done():
            self._count(f"unexpected:{msg.NAME}")
            log.info("%s: %s for unknown request %d ignored", self.LOG_PREFIX, msg.NAME, request_id)
            return
        fut.set_result(msg)

    def _fail_all(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(self.LOST(reason))
        self._futures.clear()

    async def _read_loop(self) -> None:
        assert self._reader is not None and self._conn is not None
        reason = "closed by the server"
        try:
            while True:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    break
                await self._dispatch_all(self._conn.receive_data(data))
                if self._writer is not None:
                    await self._writer.drain()
        except ConnectionFailed as exc:
            reason = f"{exc.code}: {exc.message}"
        except (ConnectionError, OSError) as exc:
            reason = f"socket: {exc}"
        finally:
            self._fail_all(reason)
            async with self._changed:
                self._changed.notify_all()
            log.info("%s: connection ended: %s", self.LOG_PREFIX, reason)

    async def _dispatch_all(self, items: list[Any]) -> None:
        for it in items:
            if isinstance(it, UnknownMessage):
                # sv2-spec §3.4: a non-channel message of an unknown extension is discarded.
                self._count("unknown-messages")
                continue
            if isinstance(it, MalformedMessage):
                self._count("malformed-messages")
                log.warning(
                    "%s: malformed %#04x ignored: %s", self.LOG_PREFIX, it.frame.msg_type, it.error
                )
                for out in self._malformed(it):
                    await self._on_output(out)
                continue
            if isinstance(it, HandshakeComplete):
                continue
            await self._dispatch(it)

    async def _dispatch(self, msg: Message) -> None:
        """Feed one decoded message (a response or a pushed message) to the role's session
        and act on its outputs, in order."""
        for out in self._receive(msg):
            await self._on_output(out)

    def _receive(self, msg: Message) -> Sequence[object]:
        """The role's sans-I/O session's outputs for ``msg``."""
        raise NotImplementedError

    def _malformed(self, item: MalformedMessage) -> Sequence[object]:
        """What the role's session makes of a frame that did not decode (default: nothing;
        it was counted and logged)."""
        return ()

    async def _on_output(self, out: object) -> None:
        """Act on one session output: a :class:`~sv2.session.Reply` resolves its request, a
        message is sent, :data:`~sv2.session.STATE_CHANGED` wakes the waiters. A role with
        outputs of its own handles them and passes the rest here."""
        if isinstance(out, Reply):
            self._resolve(out.kind, out.request_id, out.message)
        elif isinstance(out, StateChanged):
            await self._notify()
        elif isinstance(out, Message):
            self._send(out)
        else:
            raise TypeError(f"unexpected session output {out!r}")

    async def _notify(self) -> None:
        """Wake whoever waits on pushed state (:attr:`_changed`)."""
        async with self._changed:
            self._changed.notify_all()


__all__ = ["READ_CHUNK", "ClientSession", "Progress"]
