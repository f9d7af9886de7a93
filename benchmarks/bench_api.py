"""API load test over loopback: ``python -m benchmarks.bench_api [--quick]``.

Starts ``payouts serve`` (uvicorn, one worker, rate limits off, JSON access log on, sent to
/dev/null) in a subprocess on a free port, for SQLite and PostgreSQL, and drives it with an
httpx async client in this process:

* balance reads: ``GET /v1/miners/{account}/balance`` for random accounts, driven by ``wrk``
  (Debian's package; ``make bench`` installs it when run as root) with 8 connections, target
  ≥ 1,000 req/s with p99 ≤ 20 ms. httpx's async client tops out near 250 req/s here even
  against an empty FastAPI route, so it cannot measure this target; without wrk the reads
  fall back to it and the output says so;
* share ingest: ``POST /v1/shares`` columnar batches of 1,000 rows, target ≥ 50,000 shares/s.

Load generator and server share the machine's cores; numbers are per run, not medians.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

PG_URL = os.environ.get("PAYOUTS_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
MINERS = 1_000
READS = 20_000
READ_CONCURRENCY = 32
BATCH = 1_000
BATCHES = 200
INGEST_CONCURRENCY = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(url: str) -> str:
    """Migrate, register miners directly in the store, return an admin token."""
    from api import store
    from payouts.store import migrate
    from payouts.store.engine import make_engine
    from payouts.store.ledger import LedgerCredit, append_ledger_entries
    from payouts.store.repositories import register_miner

    engine = make_engine(url)
    migrate.upgrade(engine)
    ids = [register_miner(engine, f"m{i}", b"\x00\x14" + i.to_bytes(20, "big")).id
           for i in range(MINERS)]
    append_ledger_entries(engine, [LedgerCredit(i, 1000 + i, "bench") for i in ids])
    secret, _ = store.create_token(engine, "bench", ["admin"])
    engine.dispose()
    return secret


WRK_SCRIPT = """
request = function()
  return wrk.format("GET", "/v1/miners/m" .. math.random(0, %d) .. "/balance")
end
"""


def _wrk_reads(base: str, seconds: int = 10, connections: int = 8) -> dict[str, float] | None:
    """Closed-loop load from wrk (C, one thread): req/s and latency percentiles in ms."""
    import re
    import shutil

    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (MINERS - 1))
    out = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                          f.name, base], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"balance reads failed under wrk:\n{out}")

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return {"reads_per_s": float(rps.group(1)), "p50_ms": ms("50"), "p99_ms": ms("99"),
            "connections": connections}


async def _reads(base: str) -> tuple[float, list[float]]:
    lat: list[float] = []
    todo = iter(range(READS))
    limits = httpx.Limits(max_connections=READ_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as c:
        for i in range(200):  # warm-up
            await c.get(f"/v1/miners/m{i % MINERS}/balance")

        async def worker() -> None:
            for _ in todo:
                t = time.perf_counter()
                r = await c.get(f"/v1/miners/m{random.randrange(MINERS)}/balance")
                lat.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(READ_CONCURRENCY)))
        return time.perf_counter() - t0, lat


async def _ingest(base: str, token: str) -> tuple[float, int]:
    run = uuid.uuid4().hex[:8]
    bodies = []
    for b in range(BATCHES):
        bodies.append({
            "key": [f"{run}-{b}-{i}" for i in range(BATCH)],
            "account": [f"m{(b * BATCH + i) % MINERS}" for i in range(BATCH)],
            "worker": ["rig0"] * BATCH, "difficulty": [65536] * BATCH,
            "job_id": [f"job{b % 7}"] * BATCH, "revenue": [312_500_000] * BATCH,
            "time_ms": [1_700_000_000_000 + b * BATCH + i for i in range(BATCH)],
        })
    todo = iter(bodies)
    accepted = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as c:
        r = await c.post("/v1/shares", json={**bodies[0], "key": [f"w{k}" for k in
                                                                  bodies[0]["key"]]})
        assert r.status_code == 200, r.text

        async def worker() -> None:
            nonlocal accepted
            for body in todo:
                r = await c.post("/v1/shares", json=body)
                assert r.status_code == 200, r.text
                accepted += r.json()["accepted"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(INGEST_CONCURRENCY)))
        return time.perf_counter() - t0, accepted


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


def run_backend(name: str, url: str, data_dir: Path) -> dict[str, Any]:
    token = _prepare(url)
    port = _free_port()
    env = {**os.environ, "PAYOUTS_DATABASE_URL": url, "PAYOUTS_DATA_DIR": str(data_dir),
           "PAYOUTS_API__PORT": str(port)}
    env.pop("PAYOUTS_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--no-rate-limit"],
                            env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/v1/health", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("payouts serve did not start") from None
                time.sleep(0.2)
        wrk = _wrk_reads(base)
        if wrk is None:
            wall, lat = asyncio.run(_reads(base))
            reads = {"reads_per_s": READS / wall, "p50_ms": _pct(lat, 0.50),
                     "p99_ms": _pct(lat, 0.99), "connections": READ_CONCURRENCY}
            tool = "httpx (wrk not installed: this measures the client, not the server)"
        else:
            reads, tool = wrk, "wrk"
        iwall, accepted = asyncio.run(_ingest(base, token))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out = {"backend": name, **reads, "shares_per_s": accepted / iwall, "accepted": accepted}
    print(f"{name:10} balance reads: {out['reads_per_s']:8,.0f} req/s  p50 {out['p50_ms']:.2f} ms"
          f"  p99 {out['p99_ms']:.2f} ms  ({tool}, {reads['connections']:.0f} connections)"
          f"   ingest: {out['shares_per_s']:9,.0f} shares/s ({accepted:,} shares, batches of"
          f" {BATCH:,}, {INGEST_CONCURRENCY} in flight)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    global READS, BATCHES
    args = sys.argv[1:] if argv is None else argv
    if "--quick" in args:
        READS, BATCHES = 2_000, 20
    print(f"API over loopback: {MINERS:,} miners; targets: reads >= 1,000 req/s with p99 <= 20 ms,"
          f" ingest >= 50,000 shares/s")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        run_backend("sqlite", f"sqlite:///{tmp}/db/payouts.db", Path(tmp))
        admin = sa.create_engine(PG_URL)
        schema = f"bench_api_{uuid.uuid4().hex[:8]}"
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        except sa.exc.OperationalError as e:
            print(f"postgresql: skipped ({e.__class__.__name__}: server unreachable)")
            return
        try:
            url = sa.engine.make_url(PG_URL).update_query_dict(
                {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
            run_backend("postgresql", url, Path(tmp))
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()


if __name__ == "__main__":
    main()
