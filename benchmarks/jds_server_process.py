"""A JD server in its own process, for the live-server fuzz job and the 1,000-connection
benchmark: the process measured holds nothing but the server, its kernel node and the
interpreter.

    python -m benchmarks.jds_server_process [--mempool N] [--handshake-timeout S] ...

(every ``JdsLimits`` timeout and connection limit has its option; a per-address limit of 0 is
none).

The node is a :class:`~payouts.node.kernel.KernelNode` (libbitcoinkernel, regtest) with 100 +
``--mempool`` blocks mined to ``P2WSH(OP_TRUE)`` and ``--mempool`` transactions spending the
first (mature) coinbases,
so declarations can name known transactions and blocks can be found. Once listening the
process prints one JSON line: ``host``, ``port``, ``pid``, ``authority_key`` (x-only hex) and
``mempool`` (``[raw tx hex, fee]`` in template order). Then it answers stdin, one JSON line per
command:

- ``stats``: ``connections`` (``JobDeclarationServer.connections``), ``pending`` (those not
  set up yet), ``fds`` (open file
  descriptors of this process), ``rss_kib`` (``VmRSS``), ``tasks`` (live asyncio tasks),
  ``tokens``, ``tip`` (height, hash hex, bits, time), the server's ``stats`` counters and
  ``mempool`` (the node's current template, as at start);
- ``quit`` (or end of input): stop the server and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import resource
import sys
from typing import Any

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.node.interface import Node
from payouts.node.kernel import KernelNode
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut
from sv2.authority import authority_public_key
from sv2.jds import JdsLimits, JobDeclarationServer
from sv2.noise import ServerIdentity

AUTHORITY_SK = bytes.fromhex("22" * 32)
OP_TRUE_WSH = b"\x00\x20" + hashlib.sha256(b"\x51").digest()
POOL_SCRIPT = b"\x00\x14" + hashlib.sha256(b"pool").digest()[:20]
COINBASE_MATURITY = 100
# The JdsLimits fields this process takes as options (--setup-timeout ...), with their defaults.
LIMIT_OPTIONS: dict[str, Any] = {
    name: getattr(JdsLimits(), name)
    for name in (
        "handshake_timeout", "setup_timeout", "idle_timeout", "max_frame_size",
        "max_connections", "max_pending", "max_connections_per_address",
        "max_pending_per_address", "connects_per_address_per_sec",
    )
}  # fmt: skip
# 0 turns these off: every client of a benchmark comes from 127.0.0.1.
PER_ADDRESS = ("max_connections_per_address", "max_pending_per_address",
               "connects_per_address_per_sec")  # fmt: skip


def distribution(payees: int) -> Distribution:
    return Distribution(
        distribution_id=1,
        pool_payout=PoolPayout(POOL_SCRIPT, 100),
        payouts=tuple(
            Payee(
                b"\x00\x14" + hashlib.sha256(i.to_bytes(4, "little")).digest()[:20], 1_000 + i, 330
            )
            for i in range(payees)
        ),
    )


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (1,000 connections need more than 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        new = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _fill_mempool(node: KernelNode, n: int) -> list[tuple[Tx, int]]:
    await node.generate_to_script(COINBASE_MATURITY + n, OP_TRUE_WSH)
    for h in range(1, n + 1):
        cb = node.chain.blocks[h - 1].txs[0]  # blocks[0] is height 1
        fee = 1_000 + 10 * h
        value = cb.outputs[0].value - fee
        txin = TxIn(OutPoint(cb.txid, 0), b"", 0xFFFFFFFD, (b"\x51",))
        tx = Tx(2, (txin,), (TxOut(value, OP_TRUE_WSH),), 0)
        await node.send_raw_transaction(tx.serialize())
    template = await node.block_template()
    return [(t.tx, t.fee) for t in template.transactions]


def limits_from(args: argparse.Namespace) -> JdsLimits:
    values = {name: getattr(args, name) for name in LIMIT_OPTIONS}
    for name in PER_ADDRESS:
        values[name] = values[name] or None
    return JdsLimits(**values)


async def serve(args: argparse.Namespace) -> None:
    identity = ServerIdentity.signed_by(AUTHORITY_SK, validity_s=86_400)
    with KernelNode() as node:
        mempool = await _fill_mempool(node, args.mempool)
        srv = JobDeclarationServer(
            identity=identity,
            node=node,
            distribution_source=distribution(args.payees),
            port=args.port,
            supported_extensions=(0x0003, 0x4002, 0x4003),
            limits=limits_from(args),
        )
        await srv.start()
        host, port = srv.address
        hello = {
            "host": host,
            "port": port,
            "pid": os.getpid(),
            "authority_key": authority_public_key(AUTHORITY_SK).hex(),
            "mempool": [[tx.serialize().hex(), fee] for tx, fee in mempool],
        }
        print(json.dumps(hello), flush=True)
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                cmd = line.strip()
                if not line or cmd == "quit":
                    break
                if cmd == "stats":
                    print(json.dumps(await server_stats(srv, node)), flush=True)
        finally:
            await srv.stop()


async def server_stats(srv: JobDeclarationServer, node: Node) -> dict[str, Any]:
    """What the ``stats`` command prints (the in-process fuzz smoke test reads it too)."""
    tip = await node.tip()
    template = await node.block_template()
    return {
        "connections": srv.connections,
        "pending": srv.pending_connections,
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kib": rss_kib(),
        "tasks": len(asyncio.all_tasks()),
        "tokens": len(srv.tokens),
        "tip": {
            "height": tip.height,
            "hash": tip.block_hash.hex(),
            "bits": tip.bits,
            "time": tip.time,
        },
        "stats": srv.stats,
        "mempool": [[t.tx.serialize().hex(), t.fee] for t in template.transactions],
    }


class ServerProcess:
    """Client side of this module run as a process: start it, ask ``stats``, ``quit``."""

    def __init__(self, proc: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.proc = proc
        self.hello = hello
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, *args: str) -> ServerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.jds_server_process",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError("the JDS process exited before listening")
        return cls(proc, json.loads(line))

    async def stats(self) -> dict[str, Any]:
        async with self._lock:
            if self.proc.returncode is not None:
                raise RuntimeError(f"the JDS process exited with {self.proc.returncode}")
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(b"stats\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the JDS process died")
            st: dict[str, Any] = json.loads(line)
            return st

    async def quit(self) -> int:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode if self.proc.returncode is not None else -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mempool", type=int, default=20)
    ap.add_argument("--payees", type=int, default=20)
    for name, default in LIMIT_OPTIONS.items():  # the server's defaults; 0: no limit
        kind = float if default is None else type(default)
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default or 0)
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    raise_fd_limit()
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
