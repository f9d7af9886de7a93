"""Fixtures for the Template Distribution tests: a Template Provider identity of its own (the
TP's authority key is not the pool's), a TP on loopback over a kernel-backed node, and a
scripted TP that sends whatever a test wants (for the client's handling of bad input)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sv2.authority import authority_public_key
from sv2.connection import HandshakeComplete, Sv2Connection
from sv2.messages.base import Message
from sv2.messages.common import SetupConnectionSuccess
from sv2.noise import ServerIdentity
from sv2.tdp import TemplateProvider
from tests.jdc.helpers import ChainNode

TP_SK = bytes.fromhex("33" * 32)
TP_PK = authority_public_key(TP_SK)
TP_IDENTITY = ServerIdentity.signed_by(TP_SK, validity_s=86400)


@contextlib.asynccontextmanager
async def running_tp(node: ChainNode, **kw: Any) -> AsyncIterator[TemplateProvider]:
    kw.setdefault("poll_interval", 0)  # tests call refresh() themselves
    tp = TemplateProvider(identity=TP_IDENTITY, node=node, **kw)  # type: ignore[arg-type]
    await tp.start()
    try:
        yield tp
    finally:
        await tp.stop()


Script = Callable[["ScriptedPeer"], Awaitable[None]]


class ScriptedPeer:
    """The TP side of one connection in a scripted TP: receive and send messages by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = Sv2Connection.server(TP_IDENTITY)
        self.inbox: list[Any] = []

    async def handshake(self) -> None:
        while not any(isinstance(i, HandshakeComplete) for i in self.inbox):
            await self._read()
        for i in self.inbox:
            if isinstance(i, HandshakeComplete):
                self.writer.write(i.reply)
        self.inbox = [i for i in self.inbox if not isinstance(i, HandshakeComplete)]

    async def _read(self) -> None:
        data = await asyncio.wait_for(self.reader.read(65536), 5)
        if not data:
            raise ConnectionResetError("client closed")
        self.inbox.extend(self.conn.receive_data(data))

    async def recv(self) -> Any:
        while not self.inbox:
            await self._read()
        return self.inbox.pop(0)

    def send(self, msg: Message) -> None:
        self.writer.write(self.conn.send(msg))

    async def accept_setup(self) -> Any:
        """Handshake, SetupConnection -> .Success; return the client's next message (its
        CoinbaseOutputConstraints)."""
        await self.handshake()
        await self.recv()
        self.send(SetupConnectionSuccess(used_version=2, flags=0))
        return await self.recv()


@contextlib.asynccontextmanager
async def scripted_tp(script: Script) -> AsyncIterator[tuple[str, int]]:
    done: list[BaseException] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(ScriptedPeer(reader, writer))
        except BaseException as exc:  # surfaced by the test via `done`
            done.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        name = server.sockets[0].getsockname()
        yield str(name[0]), int(name[1])
    finally:
        server.close()
        await server.wait_closed()
    for exc in done:
        if not isinstance(exc, ConnectionResetError | asyncio.CancelledError):
            raise exc
