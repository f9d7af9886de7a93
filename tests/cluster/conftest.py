"""A cluster of real ``payouts serve`` processes on one PostgreSQL schema and one bitcoind
regtest node (docs/deployment.md). :class:`Cluster` starts members by role, talks to them over
HTTP, kills and stops them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from api import store
from payouts.store import migrate
from payouts.store.engine import make_engine
from regtest.harness import RegtestNode
from sv2.authority import encode_authority_secret_key
from tests.api.test_cli import _free_port
from tests.jds.helpers import AUTHORITY_SK
from tests.node.conftest import bitcoind_path  # noqa: F401  (the bitcoind binary)
from tests.store.conftest import postgres  # noqa: F401  (a PostgreSQL server, schemas per test)

MINERS = [f"m{i}" for i in range(6)]
POOL_SCRIPT = "0014" + "ab" * 20


def miner_script(i: int) -> bytes:
    return bytes.fromhex("5120") + bytes([i + 1]) * 32


@dataclass
class Member:
    role: str
    port: int
    proc: subprocess.Popen[str]
    log: Path
    jds_port: int | None = None
    mp_port: int | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text()


@dataclass(frozen=True)
class NodeAt:
    rpc_url: str
    rpc_user: str
    rpc_password: str


@dataclass
class Cluster:
    url: str
    node: NodeAt
    tmp: Path
    token: str
    extra: dict[str, str] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    regtest: RegtestNode | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
        env.update({
            "PAYOUTS_DATA_DIR": str(self.tmp / "data"),
            "PAYOUTS_DATABASE_URL": self.url,
            "PAYOUTS_NETWORK": "regtest",
            "PAYOUTS_NODE__BACKEND": "bitcoind",
            "PAYOUTS_NODE__RPC_URL": self.node.rpc_url,
            "PAYOUTS_NODE__RPC_USER": self.node.rpc_user,
            "PAYOUTS_NODE__RPC_PASSWORD": self.node.rpc_password,
            "PAYOUTS_POOL__PAYOUT_SCRIPT": POOL_SCRIPT,
            # PROP: the window is every share of the round, so share_count counts them all.
            "PAYOUTS_ACCOUNTING__SCHEME": "prop",
            "PAYOUTS_SETTLEMENT__POLL_INTERVAL_SEC": "0.5",
            "PAYOUTS_JDS__AUTHORITY_SECRET_KEY": encode_authority_secret_key(AUTHORITY_SK),
            **self.extra,
            **extra,
        })
        return env

    def start(self, role: str, *, jds: bool = False, mining: bool = False,
              **extra: str) -> Member:
        """``jds``: with a JD server; ``mining``: and a Mining Protocol server beside it."""
        port = _free_port()
        env = self.env(PAYOUTS_API__PORT=str(port), **extra)
        jds_port = mp_port = None
        if jds:
            jds_port = _free_port()
            env.update(PAYOUTS_JDS__ENABLED="true", PAYOUTS_JDS__LISTEN=f"127.0.0.1:{jds_port}")
        if mining:
            mp_port = _free_port()
            env.update(PAYOUTS_MINING__ENABLED="true",
                       PAYOUTS_MINING__LISTEN=f"127.0.0.1:{mp_port}")
        log = self.tmp / f"{role}-{port}.log"
        args = [sys.executable, "-m", "payouts", "serve", "--no-rate-limit", "--role", role]
        with log.open("w") as f:
            proc = subprocess.Popen(args, env=env, stderr=f, stdout=subprocess.DEVNULL,
                                    text=True)
        m = Member(role, port, proc, log, jds_port, mp_port)
        self.members.append(m)
        wait_until(lambda: _up(m), 60, f"{role} on :{port} answers /v1/health")
        return m

    def get(self, m: Member, path: str) -> httpx.Response:
        return httpx.get(m.base + path, headers=self.auth, timeout=10)

    def post(self, m: Member, path: str, body: Any) -> httpx.Response:
        return httpx.post(m.base + path, json=body, headers=self.auth, timeout=30)

    def sql(self, query: str) -> list[Any]:
        eng = make_engine(self.url)
        try:
            with eng.connect() as conn:
                return list(conn.execute(sa.text(query)).all())
        finally:
            eng.dispose()

    def stop_all(self) -> None:
        for m in self.members:
            if m.proc.poll() is None:
                m.proc.send_signal(signal.SIGCONT)
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            try:
                m.proc.wait(20)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)


def _up(m: Member) -> bool:
    assert m.proc.poll() is None, f"{m.role} exited:\n{m.text()[-4000:]}"
    try:
        return httpx.get(m.base + "/v1/health", timeout=1).status_code < 600
    except httpx.TransportError:
        return False


def wait_until(ok: Any, timeout: float, what: str, every: float = 0.05) -> float:
    """Poll ``ok()`` until true; returns the seconds it took (fails after ``timeout``)."""
    t0 = time.monotonic()
    while True:
        if ok():
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"timed out ({timeout} s): {what}"
        time.sleep(every)


def shares(start: int, n: int, tag: str) -> dict[str, Any]:
    return {
        "key": [f"{tag}-{start + i}" for i in range(n)],
        "account": [MINERS[(start + i) % len(MINERS)] for i in range(n)],
        "worker": ["w"] * n, "difficulty": [1000 + (start + i) % 97 for i in range(n)],
        "job_id": ["j"] * n, "revenue": [312_500_000] * n,
        "time_ms": [1_700_000_000_000 + start + i for i in range(n)],
    }


def _schema(pg: Any) -> tuple[str, str]:
    """A migrated schema with the miners and an admin token: (url, token)."""
    url = pg.new_url()
    eng = make_engine(url)
    migrate.upgrade(eng)
    token, _ = store.create_token(eng, "ops", ["admin"])
    from payouts.store.repositories import register_miner

    for i, a in enumerate(MINERS):
        register_miner(eng, a, miner_script(i))
    eng.dispose()
    return url, token


@pytest.fixture
def cluster(postgres: Any, bitcoind_path: Path, tmp_path: Path  # noqa: F811
            ) -> Iterator[Cluster]:
    """Members on one schema and one bitcoind regtest node (101 blocks)."""
    url, token = _schema(postgres)
    with RegtestNode(bitcoind_path) as node:
        node.call("generatetodescriptor", 101, "raw(51)")
        c = Cluster(url, NodeAt(node.rpc_url, node.rpc_user, node.rpc_password), tmp_path,
                    token)
        c.regtest = node
        try:
            yield c
        finally:
            c.stop_all()


@pytest.fixture
def cluster_node_down(postgres: Any, tmp_path: Path) -> Iterator[Cluster]:  # noqa: F811
    """Members on one schema whose node does not answer (nothing listens on its RPC port):
    what leadership, fencing and the share follower do needs no chain; the window's
    difficulty is pinned, as a pool serving through a node outage has it known."""
    url, token = _schema(postgres)
    c = Cluster(url, NodeAt(f"http://127.0.0.1:{_free_port()}", "u", "p"), tmp_path, token,
                extra={"PAYOUTS_ACCOUNTING__PIN_DIFFICULTY": "1000"})
    try:
        yield c
    finally:
        c.stop_all()
