"""A running ``payouts serve`` with the data of a demo run, for the browser tests.

:class:`payouts.served.ServedPool` runs exactly as the command does (``ServedPool.run`` with a
uvicorn server on a loopback port: API, pages, JD server, settlement runner, chain follower,
dashboard index), in a thread with its own event loop, on the in-process kernel node. The data
comes through the real paths: miners registered, shares with workers POSTed to
``/v1/shares`` with an operator token, a distribution published with
``POST /v1/distributions`` (pushed to JD clients), a block declared, solved and pushed by the
real JD client over TCP + Noise, recorded and tracked, then 100 blocks of maturity until the
runner pays it; a second block is found and left young so the lifecycle shows two states.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from api import store
from payouts.node.kernel import KernelNode
from payouts.node.kernel_chain import KernelChain
from payouts.served import ServedPool
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.runner import SettlementRunner
from payouts.store.ledger import list_blocks
from sv2.authority import encode_authority_secret_key
from sv2.jdc import JobDeclarationClient, JobTemplate, solve
from tests.api.conftest import p2wpkh_address
from tests.api.settle_helpers import miner_script
from tests.jds.helpers import AUTHORITY_PK, AUTHORITY_SK, KernelTestNode, setup_chain

T = TypeVar("T")
MINERS = 6
WORKERS = ("rig-a", "rig-b", "rig-c")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    pool: ServedPool
    chain: KernelChain
    node: KernelNode
    loop: asyncio.AbstractEventLoop
    admin: str  # an operator token with every scope
    reader: str  # an operator token with scope read only

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the served pool's event loop, from the test's thread."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin}", **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30.0, **kw)


def _shares(now_ms: int) -> dict[str, list[Any]]:
    """Three hours of shares from every miner's workers, some workers idle lately."""
    cols: dict[str, list[Any]] = {k: [] for k in (
        "key", "account", "worker", "difficulty", "job_id", "revenue", "time_ms")}
    n = 0
    for minute in range(0, 180, 2):
        t = now_ms - (180 - minute) * 60_000
        for i in range(MINERS):
            for w, worker in enumerate(WORKERS[: 1 + i % 3]):
                if worker == "rig-c" and minute > 120:
                    continue  # rig-c went quiet an hour ago
                cols["key"].append(f"b{n}")
                cols["account"].append(f"m{i}")
                cols["worker"].append(worker)
                cols["difficulty"].append(50_000 * (1 + i) * (1 + w) + 1_000 * (minute % 7))
                cols["job_id"].append("j")
                cols["revenue"].append(312_500_000)
                cols["time_ms"].append(t + i * 1_000 + w)
                n += 1
    return cols


async def _found_block(pool: ServedPool, chain: KernelChain) -> None:
    """The real JD client declares a job on the current distribution, solves it and pushes
    the solution; returns once the block is recorded."""
    jds = pool.jds
    assert jds is not None
    host, port = jds.address
    before = len(list_blocks(pool.service.engine))
    async with JobDeclarationClient(host, port, AUTHORITY_PK, timeout=10.0) as jdc:
        template = JobTemplate.from_block_template(await KernelTestNode(chain).block_template())
        job = await jdc.declare_job(template)
        jdc.push_solution(job, solve(template, job.coinbase, bytes.fromhex("0011223344556677")))
        for _ in range(1000):
            if len(list_blocks(pool.service.engine)) > before:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the pushed block was not recorded")


def start(tmp: Path) -> tuple[Running, threading.Thread, uvicorn.Server]:
    """Start the served pool and fill it as a demo run does (module docstring)."""
    settings = Settings(
        data_dir=tmp / "data", network="regtest",
        pool={"payout_address": p2wpkh_address(bytes.fromhex("77" * 32)), "fee_bps": 200},
        jds={"enabled": True, "listen": "127.0.0.1:0",
             "authority_secret_key": encode_authority_secret_key(AUTHORITY_SK)},
        accounting={"pin_difficulty": 10**8},
    )
    service = PoolService(settings)
    for i in range(MINERS):
        service.register_miner(f"m{i}", miner_script(i))
    admin, _ = store.create_token(service.engine, "browser-admin", ["admin"])
    reader, _ = store.create_token(service.engine, "browser-reader", ["read"])
    chain = KernelChain()
    setup_chain(chain)
    node = KernelNode(chain)
    runner = SettlementRunner(service, node, interval=3600.0)
    pool = ServedPool(settings, service=service, node=node, runner=runner, rate_limit=None)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(pool.app, host="127.0.0.1", port=port,
                                           access_log=False, log_config=None,
                                           log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(pool.run(server)),
                              name="payouts-serve", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not (server.started and pool.jds is not None):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("payouts serve did not start")
        time.sleep(0.05)
    run = Running(url, pool, chain, node, loop, admin, reader)
    r = run.api("POST", "/v1/shares", json=_shares(int(time.time() * 1000)))
    assert r.status_code == 200, r.text
    template = run.call(node.block_template())
    r = run.api("POST", "/v1/distributions", json={"estimated_revenue": template.coinbase_value})
    assert r.status_code == 201, r.text
    run.call(_found_block(pool, chain))
    run.call(runner.poll_once())  # confirmed
    run.call(node.generate_to_script(99, miner_script(50)))
    run.call(runner.poll_once())  # mature, paid
    # A second block on the distribution published after the first: found, not yet mature.
    run.call(_found_block(pool, chain))
    run.call(runner.poll_once())
    return run, thread, server


def stop(run: Running, thread: threading.Thread, server: uvicorn.Server) -> None:
    server.should_exit = True
    thread.join(30)
    run.chain.close()


def wait_indexed(run: Running, timeout: float = 30.0) -> None:
    """Until the dashboard index holds every block and share and the window snapshot is of
    the current window (the index task runs every 2 s)."""
    from payouts.dashboards import window_stats_current
    from payouts.store import dashboard

    engine = run.pool.service.engine
    with engine.connect() as conn:
        newest = int(conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM shares").scalar_one())
    deadline = time.monotonic() + timeout
    while dashboard.unindexed_block_ids(engine) or dashboard.shares_folded_through(
            engine) < newest or not window_stats_current(run.pool.service):
        if time.monotonic() > deadline:
            raise AssertionError("the dashboard index did not catch up")
        time.sleep(0.1)
