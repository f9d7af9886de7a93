"""Benchmark: 1,000 concurrent JD connections held by one server process (target: within
200 MiB RSS).

The server is ``benchmarks.jds_server_process`` (a ``JobDeclarationServer`` with default
``JdsLimits`` -- ``max_connections`` 1,000 -- on a libbitcoinkernel regtest node) in its own
process, so its RSS (``VmRSS`` of ``/proc/PID/status``) is the server's alone. This process
opens ``--connections`` connections, ``--batch`` at a time, each one: Noise NX handshake,
``SetupConnection`` (JD, DECLARE_TX_DATA), ``RequestExtensions`` (0x0003, 0x4003) answered
with Success + ``SetPayoutDistribution`` + ``SetSettlementMode``, and ``AllocateMiningJobToken``
answered with a token: a fully set-up JD client that holds a token. All connections stay open
while the server's RSS, fd and connection counts are read; then they are closed and the counts
read again.

Baseline, same run: the server's RSS before the first connection (interpreter, kernel node,
imports). Per-connection cost = (RSS with all connections - baseline) / connections.

Run: ``python -m benchmarks.bench_jds_connections`` (``--connections N``, ``--batch N``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from benchmarks.jds_server_process import ServerProcess, raise_fd_limit
from sv2.connection import HandshakeComplete, Sv2Connection
from sv2.messages import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    RequestExtensions,
    SetupConnection,
)

TARGET_MIB = 200.0


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes):
        self.reader, self.writer = reader, writer
        self.conn = Sv2Connection.client(key)
        self.inbox: list[Any] = []

    async def until(self, kind: type) -> Any:
        while True:
            for i, it in enumerate(self.inbox):
                if isinstance(it, kind):
                    del self.inbox[: i + 1]
                    return it
            data = await asyncio.wait_for(self.reader.read(65_536), 30)
            if not data:
                raise ConnectionError("server closed a benchmark connection")
            self.inbox.extend(self.conn.receive_data(data))


async def open_client(host: str, port: int, key: bytes, n: int) -> Client:
    reader, writer = await asyncio.open_connection(host, port)
    c = Client(reader, writer, key)
    writer.write(c.conn.initiate())
    await c.until(HandshakeComplete)
    for msg in (
        SetupConnection(1, 2, 2, 1, "127.0.0.1", 0, "bench", "", "", ""),
        RequestExtensions(1, (0x0003, 0x4003)),
        AllocateMiningJobToken(f"miner-{n}", 2),
    ):
        writer.write(c.conn.send(msg))
    await c.until(AllocateMiningJobTokenSuccess)  # after Success + distribution + mode
    c.inbox.clear()
    return c


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    srv = await ServerProcess.start(
        "--log-level", "ERROR", "--mempool", "0",
        # all 1,000 clients come from 127.0.0.1; in production they are 1,000 addresses
        "--max-connections-per-address", "0", "--max-pending-per-address", "0",
        "--connects-per-address-per-sec", "0",
    )
    h = srv.hello
    key = bytes.fromhex(h["authority_key"])
    clients: list[Client] = []
    try:
        await asyncio.sleep(0.5)
        base = await srv.stats()
        t0 = time.monotonic()
        for start in range(0, args.connections, args.batch):
            n = min(args.batch, args.connections - start)
            clients += await asyncio.gather(
                *(open_client(h["host"], h["port"], key, start + i) for i in range(n))
            )
        setup_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        held = await srv.stats()
        for c in clients:
            c.writer.close()
        clients.clear()
        t1 = time.monotonic()
        after = await srv.stats()
        while after["connections"] and time.monotonic() - t1 < 30:
            await asyncio.sleep(0.2)
            after = await srv.stats()
    finally:
        for c in clients:
            c.writer.close()
        await srv.quit()
    mib = held["rss_kib"] / 1024
    per_conn_kib = (held["rss_kib"] - base["rss_kib"]) / max(held["connections"], 1)
    load = os.getloadavg()
    print(
        f"JDS process, {args.connections} connections (handshake + SetupConnection + 0x0003/"
        f"0x4003 + a token each), load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"  opened in {setup_s:.1f} s ({args.connections / setup_s:,.0f} connections/s, "
        f"client and server on the same machine)"
    )
    print(
        f"  baseline (0 connections)     RSS {base['rss_kib'] / 1024:7.1f} MiB  fds {base['fds']}"
    )
    print(
        f"  {held['connections']:>4} connections held        RSS {mib:7.1f} MiB  fds {held['fds']}"
        f"  tokens {held['tokens']}  -> {per_conn_kib:.1f} KiB per connection"
    )
    print(
        f"  after closing them           RSS {after['rss_kib'] / 1024:7.1f} MiB  fds {after['fds']}"
        f"  connections {after['connections']}  tokens {after['tokens']}"
    )
    ok = held["connections"] == args.connections and mib <= TARGET_MIB
    print(
        f"  target {args.connections} connections within {TARGET_MIB:.0f} MiB RSS: "
        f"{'OK' if ok else 'MISSED'}"
    )
    return 0 if held["connections"] == args.connections else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1_000)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
