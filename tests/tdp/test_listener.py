"""The connection handling the Job Declaration Server and the Template Provider share
(``sv2.listener.NoiseListener``): the same limits, counters and logged close reasons on both
servers, over real sockets and Noise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from payouts.node.kernel_chain import KernelChain
from sv2.connection import HandshakeComplete, Sv2Connection
from sv2.jds import JdsLimits
from sv2.listener import NoiseListener
from sv2.messages import CoinbaseOutputConstraints, SetupConnection, SetupConnectionSuccess
from sv2.tdp import TemplateProvider
from tests.jdc.helpers import AUTHORITY_PK, ChainNode, make_distribution, setup_chain, start_server
from tests.jds.helpers import wait_until
from tests.tdp.helpers import TP_IDENTITY, TP_PK

HANDSHAKE_TIMEOUT = 0.3
LOGGERS = {"jds": "sv2.jds.server", "tp": "sv2.tdp.server"}
SETUP = {
    "jds": SetupConnection(1, 2, 2, 1, "", 0, "", "", "", ""),
    "tp": SetupConnection(2, 2, 2, 0, "", 0, "", "", "", ""),
}


@contextlib.asynccontextmanager
async def serving(kind: str) -> AsyncIterator[tuple[NoiseListener[Any], bytes]]:
    """One server of ``kind`` with a 0.3 s handshake timeout and room for 2 connections."""
    with KernelChain() as chain:
        setup_chain(chain)
        srv: NoiseListener[Any]
        if kind == "jds":
            limits = JdsLimits(handshake_timeout=HANDSHAKE_TIMEOUT, max_connections=2)
            srv = await start_server(ChainNode(chain), make_distribution(1), limits=limits)
            key = AUTHORITY_PK
        else:
            srv = TemplateProvider(
                identity=TP_IDENTITY,
                node=ChainNode(chain),  # type: ignore[arg-type]
                poll_interval=0,
                handshake_timeout=HANDSHAKE_TIMEOUT,
                max_connections=2,
            )
            await srv.start()
            key = TP_PK
        try:
            yield srv, key
        finally:
            await srv.stop()


class Peer:
    """A raw Noise initiator."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, key: bytes) -> None:
        self.r, self.w = r, w
        self.conn = Sv2Connection.client(key)

    @classmethod
    async def open(cls, addr: tuple[str, int], key: bytes, *, handshake: bool = True) -> Peer:
        p = cls(*await asyncio.open_connection(*addr), key)
        if handshake:
            p.w.write(p.conn.initiate())
            items: list[Any] = []
            while not any(isinstance(i, HandshakeComplete) for i in items):
                data = await asyncio.wait_for(p.r.read(65_536), 5)
                assert data, "the server closed during the handshake"
                items = p.conn.receive_data(data)
        return p

    async def eof(self) -> bool:
        """True when the server closes the socket (whatever it sent before)."""
        while True:
            data = await asyncio.wait_for(self.r.read(65_536), 5)
            if not data:
                return True


def closes(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    """The logged close reasons, in order."""
    out = []
    for rec in caplog.records:
        m = re.fullmatch(r"(JDS|TP) connection \d+ \(.*\) closed: (.*)", rec.getMessage())
        if rec.name == LOGGERS[kind] and m:
            assert m.group(1) == kind.upper()
            out.append(m.group(2))
    return out


@pytest.mark.parametrize("kind", ["jds", "tp"])
def test_both_servers_share_limits_counters_and_close_reasons(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGERS[kind])

    async def main() -> None:
        async with serving(kind) as (srv, key):
            # A silent peer: closed once the handshake timeout passes.
            silent = await Peer.open(srv.address, key, handshake=False)
            assert await silent.eof()
            # A message before SetupConnection ends the connection.
            early = await Peer.open(srv.address, key)
            early.w.write(early.conn.send(CoinbaseOutputConstraints(0, 0)))
            assert await early.eof()
            await wait_until(lambda: srv.connections == 0)
            # Two set-up connections fill the server; a third is closed at once, no act 2.
            held = [await Peer.open(srv.address, key) for _ in range(2)]
            for p in held:
                p.w.write(p.conn.send(SETUP[kind]))
                data = await asyncio.wait_for(p.r.read(65_536), 5)
                [ok] = p.conn.receive_data(data)
                assert isinstance(ok, SetupConnectionSuccess)
            refused = await Peer.open(srv.address, key, handshake=False)
            assert await asyncio.wait_for(refused.r.read(65_536), 5) == b""
            assert srv.connections == 2
            # One closes its side; stop() ends the other.
            held[0].w.close()
            await wait_until(lambda: srv.connections == 1)
            await srv.stop()
            assert srv.connections == 0 and not srv._tasks
            assert await held[1].eof()
            assert srv.stats["connections"] == 4
            assert srv.stats["disconnects"] == 4
            assert srv.stats["refused-max-connections"] == 1
            assert "internal-errors" not in srv.stats

    asyncio.run(main())
    assert closes(caplog, kind) == [
        "handshake timeout",
        "CoinbaseOutputConstraints before SetupConnection",
        "closed by peer",
        "server stopping",
    ]
