"""Attack job: one cheap peer trying to lock honest clients out of a JD server (issue #13).

    python -m benchmarks.attack_jds [--connections 2000] [--hold 15] [--churn 15]

The attack costs the peer no cryptography: 64 random bytes are a valid Noise act 1, after which
the server has done its part of the handshake and holds the connection; one byte now and then
(part of a frame never finished) used to reset its idle timer. Here:

- the server is ``benchmarks.jds_server_process`` (a JD server on a kernel regtest node) with
  the production ``JdsLimits``, in its own process;
- the attacker is this module's ``flood`` command, in its own process: ``--connections``
  connections from one source address (127.0.0.2), each sending 64 random bytes at once and
  then a single byte every ``--trickle`` s. Phase **hold** opens them once and keeps each as
  long as the server lets it; phase **churn** reopens every connection the server closes, at
  once, for the whole phase;
- an honest client (this process) repeatedly connects, does the Noise handshake,
  SetupConnection, RequestExtensions (0x0003, 0x4003) and AllocateMiningJobToken, and measures
  the time to the token: from 127.0.0.1 throughout, and from the attacker's own address
  127.0.0.2, from half a second after the attack connections are all open.

Pass: every honest attempt from 127.0.0.1 (and from 127.0.0.2 in the hold phase) gets its token
within ``--deadline`` (1 s), no attacker connection lives longer than the server's
``setup_timeout`` (+1 s of slack), and the server ends with no connection left. An honest
client sharing its address with a peer that reconnects thousands of times a second may be
evicted before it is set up (a server cannot tell two peers of one address apart before they
authenticate); those attempts are reported, not judged. Exit 1 on any failure.

``tests/jds/test_lockout.py`` runs the same attacker, smaller, against an in-process server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.jds_server_process import ServerProcess, raise_fd_limit
from sv2.connection import HandshakeComplete, Sv2Connection
from sv2.jds import JdsLimits
from sv2.messages import (
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    RequestExtensions,
    SetupConnection,
)

HONEST = "127.0.0.1"
ATTACKER = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to the loopback interface
SETTLE_S = 0.5  # honest probes start this long after the attack connections are all open


# -- the attacker (its own process) -----------------------------------------------------------


@dataclass
class FloodTally:
    opened: int = 0
    refused: int = 0  # connect or first write failed
    closed: int = 0  # closed by the server
    lifetimes: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        life = sorted(self.lifetimes)
        return {
            "opened": self.opened,
            "refused": self.refused,
            "closed": self.closed,
            "max_lifetime": life[-1] if life else 0.0,
            "median_lifetime": statistics.median(life) if life else 0.0,
        }


async def _hold_one(
    host: str,
    port: int,
    source: str,
    trickle: float,
    end: float,
    tally: FloodTally,
    gate: asyncio.Semaphore,
) -> None:
    """One attack connection: 64 random bytes, then one byte every ``trickle`` s until the
    server closes it or ``end``; its lifetime is recorded when the server closed it. ``gate``
    bounds the connects in flight."""
    loop = asyncio.get_running_loop()
    try:
        async with gate:
            r, w = await asyncio.open_connection(host, port, local_addr=(source, 0))
            w.write(os.urandom(64))
    except (ConnectionError, OSError):
        tally.refused += 1
        return
    tally.opened += 1
    t0 = loop.time()
    try:
        while loop.time() < end:
            try:
                data = await asyncio.wait_for(r.read(65_536), trickle * random.uniform(0.5, 1.5))
            except TimeoutError:
                w.write(os.urandom(1))  # a byte of a frame that never completes
                continue
            if not data:
                break
        else:
            return  # still open when the phase ended
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()
    tally.closed += 1
    tally.lifetimes.append(loop.time() - t0)


async def flood(
    host: str,
    port: int,
    *,
    connections: int,
    source: str,
    trickle: float,
    duration: float,
    reconnect: bool,
    ready: asyncio.Event | None = None,
) -> FloodTally:
    """``connections`` attack connections for ``duration`` s, at most 200 connects in flight;
    with ``reconnect`` each one reopens as soon as the server closes it. ``ready`` is set once
    every one was opened (or refused) the first time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    tally = FloodTally()
    gate = asyncio.Semaphore(200)

    async def slot() -> None:
        while loop.time() < end:
            await _hold_one(host, port, source, trickle, end, tally, gate)
            if not reconnect:
                return

    async def watch() -> None:
        while tally.opened + tally.refused < connections:
            await asyncio.sleep(0.01)
        if ready is not None:
            ready.set()

    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*(slot() for _ in range(connections)))
    watcher.cancel()
    return tally


async def _flood_command(args: argparse.Namespace) -> int:
    ready = asyncio.Event()
    options = ("connections", "source", "trickle", "duration", "reconnect")
    job = asyncio.ensure_future(
        flood(args.host, args.port, ready=ready, **{k: getattr(args, k) for k in options})
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(ready.wait()), args.duration)
    print(json.dumps({"ready": True}), flush=True)
    tally = await job
    print(json.dumps(tally.summary()), flush=True)
    return 0


class Flood:
    """The ``flood`` command as a subprocess: started, waited for until its connections are
    open, and its tally read at the end."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls,
        host: str,
        port: int,
        *,
        connections: int,
        source: str = ATTACKER,
        trickle: float = 1.0,
        duration: float = 10.0,
        reconnect: bool = False,
    ) -> Flood:
        argv = [
            "flood", "--host", host, "--port", str(port), "--connections", str(connections),
            "--source", source, "--trickle", str(trickle), "--duration", str(duration),
        ]  # fmt: skip
        if reconnect:
            argv.append("--reconnect")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.attack_jds", *argv, stdout=asyncio.subprocess.PIPE
        )
        return cls(proc)

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the attacker process exited before its connections were open")

    async def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        await self.proc.wait()
        if not line:
            raise RuntimeError(f"the attacker process failed ({self.proc.returncode})")
        out: dict[str, Any] = json.loads(line)
        return out

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


# -- the honest client ------------------------------------------------------------------------


async def honest_token(
    host: str, port: int, authority_key: bytes, *, source: str = HONEST, timeout: float = 5.0
) -> float:
    """Seconds from connect to AllocateMiningJobToken.Success: Noise NX handshake,
    SetupConnection (JD, DECLARE_TX_DATA), RequestExtensions (0x0003, 0x4003),
    AllocateMiningJobToken. Raises (ConnectionError, TimeoutError) when it does not get there
    within ``timeout``."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r, w = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(source, 0)), timeout
    )
    conn = Sv2Connection.client(authority_key)

    async def until(kind: type) -> None:
        while True:
            data = await asyncio.wait_for(r.read(65_536), t0 + timeout - loop.time())
            if not data:
                raise ConnectionError(f"closed by the server before {kind.__name__}")
            if any(isinstance(it, kind) for it in conn.receive_data(data)):
                return

    try:
        w.write(conn.initiate())
        await until(HandshakeComplete)
        for msg in (
            SetupConnection(1, 2, 2, 1, host, port, "attack_jds honest", "", "", ""),
            RequestExtensions(1, (0x0003, 0x4003)),
            AllocateMiningJobToken("honest", 2),
        ):
            w.write(conn.send(msg))
        await until(AllocateMiningJobTokenSuccess)
        return loop.time() - t0
    finally:
        w.close()


@dataclass
class Probes:
    """Honest attempts from one address: their times to token, and the failures."""

    source: str
    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def probe(self, host: str, port: int, key: bytes) -> None:
        try:
            self.times.append(await honest_token(host, port, key, source=self.source))
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def over(self, deadline: float) -> list[float]:
        return [t for t in self.times if t > deadline]

    def line(self) -> str:
        if not self.times:
            return f"from {self.source}: no token in {len(self.failures)} attempts"
        ts = sorted(self.times)
        p95 = ts[min(len(ts) - 1, int(0.95 * len(ts)))]
        return (
            f"from {self.source}: {len(ts)} tokens, {len(self.failures)} failed; to token "
            f"median {1000 * statistics.median(ts):.1f} ms, p95 {1000 * p95:.1f} ms, "
            f"max {1000 * ts[-1]:.1f} ms"
        )


# -- the job ----------------------------------------------------------------------------------


async def phase(
    srv: ServerProcess,
    name: str,
    args: argparse.Namespace,
    *,
    reconnect: bool,
    duration: float,
    judged: tuple[str, ...],
) -> list[str]:
    """One attack phase; returns its failures."""
    h = srv.hello
    host, port, key = h["host"], h["port"], bytes.fromhex(h["authority_key"])
    limits = JdsLimits()
    before = (await srv.stats())["stats"]
    attacker = await Flood.start(
        host, port, connections=args.connections, trickle=args.trickle, duration=duration,
        reconnect=reconnect,
    )  # fmt: skip
    probes = {s: Probes(s) for s in (HONEST, ATTACKER)}
    peak: dict[str, Any] = {"connections": 0, "pending": 0}
    t0 = time.monotonic()
    try:
        await attacker.ready()
        opened_s = time.monotonic() - t0
        # The burst just emptied the attacker address's connect-rate bucket: an honest client
        # of that address is refused until it refills (a few tens of ms).
        await asyncio.sleep(SETTLE_S)
        while time.monotonic() - t0 < duration - 0.5:
            for p in probes.values():
                await p.probe(host, port, key)
            st = await srv.stats()
            for k in peak:
                peak[k] = max(peak[k], st[k])
            await asyncio.sleep(args.interval)
        result = await attacker.result()
    finally:
        attacker.kill()
    end = await srv.stats()
    deadline_s = time.monotonic() + 15
    while end["connections"] and time.monotonic() < deadline_s:
        await asyncio.sleep(0.2)
        end = await srv.stats()
    counters = {
        k: v - before.get(k, 0)
        for k, v in sorted(end["stats"].items())
        if k.startswith(("evicted", "refused")) and v > before.get(k, 0)
    }
    print(
        f"phase {name}: {args.connections} attack connections from {ATTACKER} "
        f"({'reopened as soon as closed' if reconnect else 'opened once'}; 64 random bytes, "
        f"then 1 byte every ~{args.trickle:g} s), {duration:g} s; all open after "
        f"{opened_s:.1f} s"
    )
    print(
        f"  attacker: {result['opened']:,} connections opened, {result['closed']:,} of them "
        f"closed by the server before the phase ended, {result['refused']:,} connects failed; "
        f"lifetime median "
        f"{result['median_lifetime']:.2f} s, max {result['max_lifetime']:.2f} s"
    )
    print(
        f"  server: at most {peak['connections']} connections ({peak['pending']} pending) at a "
        f"probe; after: {end['connections']} connections, RSS {end['rss_kib'] / 1024:.1f} MiB; "
        "in this phase: "
        + ", ".join(f"{k} {v:,}" for k, v in counters.items())
    )
    failures = []
    for s, p in probes.items():
        mark = "judged" if s in judged else "reported"
        print(f"  honest client {p.line()} ({mark})")
        if s in judged:
            failures += [f"{name}: {s}: {f}" for f in p.failures[:5]]
            failures += [f"{name}: {s}: token after {t:.3f} s" for t in p.over(args.deadline)]
            if not p.times:
                failures.append(f"{name}: {s}: no honest attempt completed")
    assert limits.setup_timeout is not None
    if result["max_lifetime"] > limits.setup_timeout + 1.0:
        failures.append(
            f"{name}: an attack connection lived {result['max_lifetime']:.2f} s "
            f"(setup_timeout {limits.setup_timeout:g} s)"
        )
    if end["connections"]:
        failures.append(f"{name}: {end['connections']} connections left after the attack")
    return failures


async def main_async(args: argparse.Namespace) -> int:
    raise_fd_limit()
    srv = await ServerProcess.start("--log-level", "ERROR", "--mempool", "0")
    lim = JdsLimits()
    print(
        f"attack_jds: JDS pid {srv.hello['pid']} with the default JdsLimits: handshake_timeout "
        f"{lim.handshake_timeout:g} s, setup_timeout {lim.setup_timeout:g} s, idle_timeout "
        f"{lim.idle_timeout:g} s, max_connections {lim.max_connections}, max_pending "
        f"{lim.max_pending}, per address {lim.max_connections_per_address} connections / "
        f"{lim.max_pending_per_address} pending; honest deadline {args.deadline:g} s",
        flush=True,
    )
    failures: list[str] = []
    try:
        failures += await phase(
            srv, "hold", args, reconnect=False, duration=args.hold, judged=(HONEST, ATTACKER)
        )
        failures += await phase(
            srv, "churn", args, reconnect=True, duration=args.churn, judged=(HONEST,)
        )
        st = await srv.stats()
        if "internal-errors" in st["stats"]:
            failures.append(f"internal errors: {st['stats']['internal-errors']}")
    finally:
        code = await srv.quit()
    if code != 0:
        failures.append(f"the JDS process exited with {code}")
    for f in failures[:20]:
        print("FAIL", f)
    print("no failures" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command")
    fl = sub.add_parser("flood", help="the attacker alone (what the job starts)")
    fl.add_argument("--host", default="127.0.0.1")
    fl.add_argument("--port", type=int, required=True)
    fl.add_argument("--connections", type=int, default=2_000)
    fl.add_argument("--source", default=ATTACKER)
    fl.add_argument("--trickle", type=float, default=1.0)
    fl.add_argument("--duration", type=float, default=10.0)
    fl.add_argument("--reconnect", action="store_true")
    ap.add_argument("--connections", type=int, default=2_000)
    ap.add_argument("--trickle", type=float, default=1.0, help="seconds between single bytes")
    ap.add_argument("--hold", type=float, default=15.0, help="seconds of the hold phase")
    ap.add_argument("--churn", type=float, default=15.0, help="seconds of the churn phase")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between honest probes")
    ap.add_argument("--deadline", type=float, default=1.0, help="honest time-to-token bound")
    args = ap.parse_args(argv)
    raise_fd_limit()
    if args.command == "flood":
        return asyncio.run(_flood_command(args))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
