"""Several processes on one PostgreSQL (issue 15), each against the single process in the
same run:

* ``ingest``: aggregate durable share ingest (batches of 10,000, committed on return) of the
  single process (``role all``: store + account in its window) against one and two frontend
  processes (``api``/``jds``: validate + store only, the leader's follower accounts), each
  writer its own OS process on one PostgreSQL schema. The share-order lock
  (payouts/store/shares.py) covers only each batch's id reservation; the same-run baseline
  "2 frontends, lock to COMMIT" holds a lock from the ids to the COMMIT, as it was before.
  ``BENCH_CLUSTER_PROFILE=1`` samples the writers' backends in pg_stat_activity (where their
  time goes: the COPY, WAL flushes, waits on the order lock).
* ``failover``: two ``payouts serve --role leader`` processes; SIGKILL the leader; time until
  the standby holds the lease (epoch bumped) and until it published the window view again.
  Baseline: a single ``payouts serve`` (role all, same PostgreSQL) killed and restarted, time
  until it answers ``GET /v1/window`` again.
* ``push``: publish-to-push latency across JD servers (issue 15: every JD server pushes a new
  distribution within 1 s). A leader and two ``payouts serve --role jds`` frontends on one
  schema and one bitcoind regtest node, a JD client (sv2.jdc, TCP + Noise) connected to each
  frontend's JD server; ``POST /v1/distributions`` on one frontend (forwarded to the leader,
  published, NOTIFYed); the time until *both* clients hold the new SetPayoutDistribution.
  Baseline: a single ``payouts serve`` (role all, its own JD server) and one JD client, the
  same publications.

Run: ``python -m benchmarks.bench_cluster`` (PostgreSQL from ``$PAYOUTS_TEST_POSTGRES_URL``;
``BENCH_CLUSTER_CASES`` picks from ``ingest,failover,push``, ``BENCH_CLUSTER_RUNS`` the runs per
case, ``BENCH_CLUSTER_PUSHES`` the publications; ``push`` needs bitcoind, found or built like
the tests' by regtest.build).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

from benchmarks.summary import target

PG_URL = os.environ.get("PAYOUTS_TEST_POSTGRES_URL",
                        "postgresql+psycopg://root@127.0.0.1:5432/test")
BATCH = 10_000
BATCHES = 20  # per writer
MINERS = 1_000
RUNS = int(os.environ.get("BENCH_CLUSTER_RUNS", "3"))


def _schema(admin: sa.Engine) -> str:
    name = f"bench_cluster_{uuid.uuid4().hex[:10]}"
    with admin.begin() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={name}"})
    return url.render_as_string(hide_password=False)


def _prepare(url: str) -> None:
    from payouts.store import migrate
    from payouts.store.engine import make_engine
    from payouts.store.repositories import register_miner

    eng = make_engine(url)
    migrate.upgrade(eng)
    for i in range(MINERS):
        register_miner(eng, f"m{i}", bytes.fromhex("0014") + i.to_bytes(20, "big"))
    eng.dispose()


def _hold_order_to_commit() -> None:
    """The share order as it was before the lock was narrowed (the same-run baseline): a
    transaction-scoped lock taken before the ids and held to COMMIT, so every writer's COPY and
    COMMIT run one at a time (on top of today's reservation and turns, which then never wait)."""
    from payouts.store import shares

    real = shares._copy_sorted

    def serialized(conn: Any, cur: Any, *args: Any, **kwargs: Any) -> Any:
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
                    (shares.SHARE_ORDER_LOCK + 1,))
        return real(conn, cur, *args, **kwargs)

    shares._copy_sorted = serialized


def _writer(url: str, tag: str, accounting: bool, start: Any, out: Any, pids: Any,
            serialize: bool = False) -> None:
    from payouts.accounting.shares import ShareBatch
    from payouts.service import PoolService
    from payouts.settings import Settings

    if serialize:
        _hold_order_to_commit()

    settings = Settings(database_url=url, accounting={"pin_difficulty": 1_000_000})
    svc = PoolService(settings, migrate=False, accounting=accounting)
    with svc.engine.connect() as c:  # one thread: the pool hands this connection back
        pids.put(int(c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()))
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    batches = []
    for b in range(BATCHES):
        n = BATCH
        batches.append(ShareBatch(
            key=[f"{tag}-{b}-{i}-{rng.integers(1 << 62):x}" for i in range(n)],
            miner_id=rng.integers(1, MINERS + 1, n).astype(np.int64),
            worker=["w"] * n, difficulty=np.full(n, 1000, dtype=np.int64),
            job_id=["j"] * n, revenue=np.full(n, 312_500_000, dtype=np.int64),
            time_ms=np.arange(n, dtype=np.int64) + 1_700_000_000_000))
    start.wait()
    t0 = time.perf_counter()
    c0 = time.process_time()
    for batch in batches:
        svc.ingest(batch)
    out.put((time.perf_counter() - t0, time.process_time() - c0))
    svc.engine.dispose()


def _classify(state: str | None, wtype: str | None, event: str | None, query: str) -> str:
    """What a writer's backend was doing at one sample (pg_stat_activity)."""
    if wtype == "Lock" and event == "advisory":
        return "waiting for the share-order lock"
    if wtype == "Lock":
        return f"waiting for a lock ({event})"
    if state == "idle in transaction":
        return "in a transaction, waiting for the client"
    if state == "idle":
        return "idle (client between batches)"
    if wtype in ("IO", "LWLock") and event and event.startswith("WAL"):
        return "WAL write/flush (commit)"
    if wtype == "Client":
        return "waiting for the client (COPY data)" if "COPY" in query else "client I/O"
    if wtype:
        return f"{wtype}:{event}"
    return "running (CPU)" + (": COPY" if "COPY" in query else "")


class _Sampler:
    """Samples the writers' backends in pg_stat_activity every ~5 ms: where the time goes."""

    def __init__(self, pids: list[int]) -> None:
        import threading

        self.pids = pids
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        url = sa.engine.make_url(PG_URL)
        with psycopg.connect(host=url.host, port=url.port or 5432, user=url.username,
                             dbname=url.database, autocommit=True) as conn:
            while not self._stop.is_set():
                for row in conn.execute(
                        "SELECT state, wait_event_type, wait_event, left(query, 60) "
                        "FROM pg_stat_activity WHERE pid = ANY(%s)", (self.pids,)).fetchall():
                    k = _classify(*row)
                    self.counts[k] = self.counts.get(k, 0) + 1
                time.sleep(0.005)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.counts


def ingest_case(admin: sa.Engine, writers: int, accounting: bool, profile: bool = False,
                serialize: bool = False) -> tuple[float, float, dict[str, int]]:
    """Aggregate shares/s of ``writers`` processes (wall time of the slowest), the writers'
    summed CPU seconds, and (``profile``) the samples of what their backends were doing."""
    url = _schema(admin)
    _prepare(url)
    ctx = mp.get_context("spawn")
    start, out, pids = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_writer,
                         args=(url, f"w{i}", accounting, start, out, pids, serialize))
             for i in range(writers)]
    for p in procs:
        p.start()
    backends = [pids.get(timeout=120) for _ in procs]
    time.sleep(3.0 + 2.0 * writers)  # each builds its batches (and restores its window)
    sampler = _Sampler(backends) if profile else None
    t0 = time.perf_counter()
    start.set()
    cpu = 0.0
    for _ in procs:
        cpu += out.get(timeout=600)[1]
    wall = time.perf_counter() - t0
    samples = sampler.stop() if sampler is not None else {}
    for p in procs:
        p.join()
    return writers * BATCHES * BATCH / wall, cpu, samples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(url: str, role: str, tmp: Path, port: int | None = None
           ) -> tuple[subprocess.Popen[bytes], int]:
    port = port or _free_port()
    e = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    e.update(PAYOUTS_DATABASE_URL=url, PAYOUTS_DATA_DIR=str(tmp), PAYOUTS_API__PORT=str(port),
             PAYOUTS_NODE__BACKEND="bitcoind",
             PAYOUTS_NODE__RPC_URL=f"http://127.0.0.1:{_free_port()}",  # down: not needed
             PAYOUTS_NODE__RPC_USER="u", PAYOUTS_NODE__RPC_PASSWORD="p",
             PAYOUTS_ACCOUNTING__PIN_DIFFICULTY="1000",
             PAYOUTS_POOL__PAYOUT_SCRIPT="0014" + "ab" * 20)
    p = subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--no-rate-limit",
                          "--role", role], env=e, stderr=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL)
    return p, port


def _wait(ok: Any, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.02)


def _window_ok(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _lease(eng: sa.Engine) -> tuple[int, int]:
    """(lease epoch, epoch of the published view: 0 before any)."""
    with eng.connect() as c:
        e = int(c.exec_driver_sql("SELECT epoch FROM leader_lease").scalar_one())
        v = c.exec_driver_sql("SELECT epoch FROM window_view").scalar()
    return e, int(v or 0)


def failover_case(admin: sa.Engine, tmp: Path) -> tuple[float, float]:
    """Seconds from SIGKILL of the leader to (epoch bumped, view published by the new one)."""
    from payouts.store.engine import make_engine

    url = _schema(admin)
    _prepare(url)
    eng = make_engine(url)
    a, _pa = _serve(url, "leader", tmp)
    try:
        _wait(lambda: _lease(eng)[1] == 1)
        b, pb = _serve(url, "leader", tmp)
        try:
            _wait(lambda: _window_ok(pb), 120)  # the standby is up ...
            time.sleep(2.0)  # ... and has tried the lock (every 1 s)
            t0 = time.perf_counter()
            a.send_signal(signal.SIGKILL)
            _wait(lambda: _lease(eng)[0] == 2)
            elected = time.perf_counter() - t0
            _wait(lambda: _lease(eng)[1] == 2)
            serving = time.perf_counter() - t0
        finally:
            b.send_signal(signal.SIGTERM)
            b.wait(30)
    finally:
        if a.poll() is None:
            a.kill()
        a.wait(10)
        eng.dispose()
    return elected, serving


def restart_case(admin: sa.Engine, tmp: Path) -> float:
    """Seconds from SIGKILL of a single process to its restart answering /v1/health (the
    interpreter's start and imports included, as a supervisor's restart has them)."""
    url = _schema(admin)
    _prepare(url)
    a, port = _serve(url, "all", tmp)
    _wait(lambda: _window_ok(port))
    t0 = time.perf_counter()
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    b, _ = _serve(url, "all", tmp, port)
    try:
        _wait(lambda: _window_ok(port))
        return time.perf_counter() - t0
    finally:
        b.send_signal(signal.SIGTERM)
        b.wait(30)


# -- publish-to-push --------------------------------------------------------------------------

PUSHES = int(os.environ.get("BENCH_CLUSTER_PUSHES", "15"))
PUSH_TARGET_S = 1.0
_AUTHORITY_SK = bytes.fromhex("22" * 32)


def _push_env(url: str, tmp: Path, node: Any, port: int, jds_port: int | None
              ) -> dict[str, str]:
    from sv2.authority import encode_authority_secret_key

    e = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    e.update(PAYOUTS_DATABASE_URL=url, PAYOUTS_DATA_DIR=str(tmp), PAYOUTS_API__PORT=str(port),
             PAYOUTS_NETWORK="regtest", PAYOUTS_NODE__BACKEND="bitcoind",
             PAYOUTS_NODE__RPC_URL=node.rpc_url, PAYOUTS_NODE__RPC_USER=node.rpc_user,
             PAYOUTS_NODE__RPC_PASSWORD=node.rpc_password,
             PAYOUTS_POOL__PAYOUT_SCRIPT="0014" + "ab" * 20,
             PAYOUTS_JDS__AUTHORITY_SECRET_KEY=encode_authority_secret_key(_AUTHORITY_SK))
    if jds_port is not None:
        e.update(PAYOUTS_JDS__ENABLED="true", PAYOUTS_JDS__LISTEN=f"127.0.0.1:{jds_port}")
    return e


def _start(url: str, role: str, tmp: Path, node: Any, jds: bool
           ) -> tuple[subprocess.Popen[bytes], int, int | None]:
    port, jds_port = _free_port(), (_free_port() if jds else None)
    p = subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--no-rate-limit",
                          "--role", role], env=_push_env(url, tmp, node, port, jds_port),
                         stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return p, port, jds_port


def _listening(port: int) -> bool:
    """A JD server starts listening once a first distribution exists (the leader publishes one
    from the node's template when elected)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _token(url: str) -> str:
    from api import store
    from payouts.store.engine import make_engine

    eng = make_engine(url)
    try:
        return store.create_token(eng, "bench", ["admin"])[0]
    finally:
        eng.dispose()


async def _publish_and_wait(api_port: int, token: str, jd_ports: list[int]) -> list[float]:
    """Seconds from each ``POST /v1/distributions`` to the moment every JD client holds it
    (``PUSHES`` publications; each client waits in its own task)."""
    import asyncio

    from sv2.authority import authority_public_key
    from sv2.jdc import JobDeclarationClient

    pk = authority_public_key(_AUTHORITY_SK)
    clients = [JobDeclarationClient("127.0.0.1", p, pk, timeout=30.0) for p in jd_ports]
    for c in clients:
        await c.__aenter__()
    try:
        for c in clients:
            await c.wait_for_distribution(timeout=60.0)
        out = []
        with httpx.Client(timeout=30) as http:
            for _ in range(PUSHES):
                ids = [c.distribution.distribution_id for c in clients if c.distribution]
                assert len(ids) == len(clients) and len(set(ids)) == 1, ids
                t0 = time.perf_counter()

                async def arrival(c: Any, after: int = ids[0]) -> float:
                    await c.wait_for_distribution(after=after, timeout=30.0)
                    return time.perf_counter()

                waits = [asyncio.create_task(arrival(c)) for c in clients]
                r = await asyncio.to_thread(
                    http.post, f"http://127.0.0.1:{api_port}/v1/distributions",
                    json={"estimated_revenue": 5_000_000_000},
                    headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 201, r.text
                arrived = await asyncio.gather(*waits)
                out.append(max(arrived) - t0)
                await asyncio.sleep(0.2)
        return out
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)


def push_case(admin: sa.Engine, tmp: Path) -> tuple[list[float], list[float]]:
    """(cluster latencies: leader + 2 JD frontends, publish on one; single process's)."""
    import asyncio

    from regtest.harness import RegtestNode

    procs: list[subprocess.Popen[bytes]] = []
    with RegtestNode() as node:
        node.call("generatetodescriptor", 101, "raw(51)")
        try:
            url = _schema(admin)
            _prepare(url)
            token = _token(url)
            leader, _lp, _ = _start(url, "leader", tmp, node, jds=False)
            procs.append(leader)
            fronts = [_start(url, "jds", tmp, node, jds=True) for _ in range(2)]
            procs += [f[0] for f in fronts]
            for _p, port, jport in fronts:
                _wait(lambda port=port: _window_ok(port), 120)
                _wait(lambda jport=jport: _listening(jport or 0), 120)
            cluster = asyncio.run(_publish_and_wait(
                fronts[0][1], token, [j or 0 for _p, _port, j in fronts]))
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
            procs.clear()
            url1 = _schema(admin)
            _prepare(url1)
            token1 = _token(url1)
            single, port1, jds1 = _start(url1, "all", tmp, node, jds=True)
            procs.append(single)
            _wait(lambda: _window_ok(port1), 120)
            _wait(lambda: _listening(jds1 or 0), 120)
            alone = asyncio.run(_publish_and_wait(port1, token1, [jds1 or 0]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    return cluster, alone


def _drop_schemas(admin: sa.Engine) -> None:
    """Drop every bench schema, each in its own transaction (one transaction for all of them
    runs out of lock slots: a schema holds ~30 tables and their indexes)."""
    with admin.connect() as c:
        names = [n for (n,) in c.exec_driver_sql(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_cluster_%%'").all()]
    for name in names:
        with admin.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def main() -> None:
    admin = sa.create_engine(PG_URL)
    try:
        _cases(admin)
    finally:
        _drop_schemas(admin)
        admin.dispose()


def _cases(admin: sa.Engine) -> None:
    print(f"load average at start: {os.getloadavg()}")
    print(f"ingest: {BATCHES} batches of {BATCH:,} per writer, {MINERS:,} miners, median of "
          f"{RUNS}")
    rows = {}
    cases = os.environ.get("BENCH_CLUSTER_CASES", "ingest,failover,push").split(",")
    profile = os.environ.get("BENCH_CLUSTER_PROFILE") == "1"
    for label, writers, accounting, serialize in (
            ("single process (role all)", 1, True, False), ("1 frontend", 1, False, False),
            ("2 frontends, lock to COMMIT", 2, False, True), ("2 frontends", 2, False, False)):
        if "ingest" not in cases:
            break
        runs = [ingest_case(admin, writers, accounting, profile, serialize)
                for _ in range(RUNS)]
        rates = [r[0] for r in runs]
        rows[label] = statistics.median(rates)
        print(f"  {label:28s} {rows[label]:12,.0f} shares/s   runs: "
              + ", ".join(f"{r:,.0f}" for r in rates)
              + "   writers' CPU s per run: " + ", ".join(f"{r[1]:.1f}" for r in runs)
              + f"   load {os.getloadavg()[0]:.2f}")
        if profile:
            total: dict[str, int] = {}
            for r in runs:
                for k, n in r[2].items():
                    total[k] = total.get(k, 0) + n
            n_all = sum(total.values()) or 1
            for k, n in sorted(total.items(), key=lambda kv: -kv[1]):
                print(f"      {100 * n / n_all:5.1f}%  {k}")
    if rows:
        base = rows["single process (role all)"]
        for label in ("1 frontend", "2 frontends, lock to COMMIT", "2 frontends"):
            print(f"  {label} / single process: {rows[label] / base:.2f}x; / 1 frontend: "
                  f"{rows[label] / rows['1 frontend']:.2f}x")
    if "push" in cases:
        with tempfile.TemporaryDirectory() as d:
            load0 = os.getloadavg()[0]
            cluster, alone = push_case(admin, Path(d))
        ms = [1000 * x for x in cluster]
        ms1 = [1000 * x for x in alone]
        print(f"publish-to-push ({PUSHES} publications; POST /v1/distributions to the last JD "
              f"client holding it), load {load0:.2f} -> {os.getloadavg()[0]:.2f}")
        print(f"  leader + 2 JD frontends (both clients): median {statistics.median(ms):.0f} "
              f"ms, max {max(ms):.0f} ms; runs {[round(x) for x in ms]}")
        print(f"  single process (role all):              median {statistics.median(ms1):.0f} "
              f"ms, max {max(ms1):.0f} ms; runs {[round(x) for x in ms1]}")
        target("publish-to-push, every JD server of 2 frontends (max of "
               f"{PUSHES})", max(ms), 1000 * PUSH_TARGET_S, "ms", at_least=False,
               baseline=f"single process: median {statistics.median(ms1):.0f} ms, "
                        f"max {max(ms1):.0f} ms", load=load0)
    if "failover" not in cases:
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fo = [failover_case(admin, tmp) for _ in range(RUNS)]
        rs = [restart_case(admin, tmp) for _ in range(RUNS)]
    el = statistics.median(x[0] for x in fo)
    sv = statistics.median(x[1] for x in fo)
    rr = statistics.median(rs)
    fo_runs = ", ".join(f"{x[0]:.2f}/{x[1]:.2f}" for x in fo)
    print(f"failover (SIGKILL leader): standby elected in {el:.2f} s, its window view "
          f"published in {sv:.2f} s (median of {RUNS}; runs {fo_runs})")
    print(f"single process killed and restarted, answering again: {rr:.2f} s (runs "
          f"{[f'{x:.2f}' for x in rs]}); failover / restart: {sv / rr:.2f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
