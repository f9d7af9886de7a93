"""Two real ``payouts serve`` processes on one PostgreSQL schema (issue 15): JD tokens are valid
only on the JD server that issued them, and rate limits hold on the sum of both frontends.

Each process runs the API and a JD server on its own embedded kernel node (both at the regtest
genesis, so one declaration fits either). The JD part talks Noise over TCP to both servers:

- DeclareMiningJob limit (``[jds] declarations_per_address_per_sec``, burst 1 here): six
  declarations from one address, alternating between the two servers: one passes, five get
  ``rate-limited`` (each server alone would have let one through: two);
- AllocateMiningJobToken limit (``tokens_per_address_per_sec``, burst 1 here): one on A is
  answered at once, the next one on B waits for the shared limit (alone it would not wait);
- a token allocated on A and declared on B: ``invalid-mining-job-token`` naming both servers,
  and B logs it; the same token then declared on A: accepted;
- the API's public limit (``[api] rate_limit_per_sec``, burst 10): fifteen requests alternating
  between the two APIs: ten answered, five 429.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from payouts.store import migrate
from payouts.tx.coinbase import HALVING_INTERVAL_REGTEST, block_subsidy
from sv2.authority import encode_authority_secret_key
from sv2.domain_messages import distribution_from_message
from sv2.jds.tokens import server_tag
from sv2.messages import (
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    SetPayoutDistribution,
    SetSettlementMode,
)
from tests.api.test_cli import _free_port, _wait_http
from tests.jds.helpers import AUTHORITY_SK, JdClient, build_declaration
from tests.store.conftest import _Postgres

pytestmark = pytest.mark.postgres

TAGS = {n: server_tag(f"frontend-{n}").hex() for n in "ab"}
DECLARE_RATE = 0.5  # a second: bursts of max(1, round(2 × 0.5)) = 1


class _Genesis:
    """What build_declaration needs of a chain: a fresh kernel node is at the regtest genesis."""

    tip_height = 0

    @staticmethod
    def subsidy(height: int) -> int:
        return block_subsidy(height, HALVING_INTERVAL_REGTEST)


def _config(tmp: Path, url: str, name: str, api: int, jds: int) -> Path:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f"""\
network = "regtest"
data_dir = "{tmp / name}"
database_url = "{url}"

[pool]
payout_script = "0014{'11' * 20}"

[api]
port = {api}
rate_limit_per_sec = 0.01
rate_limit_burst = 10

[jds]
enabled = true
listen = "127.0.0.1:{jds}"
server_id = "frontend-{name}"
authority_secret_key = "{encode_authority_secret_key(AUTHORITY_SK)}"
declarations_per_address_per_sec = {DECLARE_RATE}
tokens_per_address_per_sec = {DECLARE_RATE}
""")
    return cfg


def _serve(cfg: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    return subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--config", str(cfg)],
                            env=env, stderr=subprocess.PIPE, text=True)


class Frontends:
    """Processes ``a`` and ``b``; :meth:`stop` ends them and returns what each logged."""

    def __init__(self) -> None:
        self.ports = {n: (_free_port(), _free_port()) for n in "ab"}  # (api, jds)
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.stderr: dict[str, str] = {}

    def stop(self) -> dict[str, str]:
        for n, p in self.procs.items():
            if n not in self.stderr:
                p.terminate()
                self.stderr[n] = p.communicate(timeout=30)[1]
        return self.stderr


@pytest.fixture
def frontends(tmp_path: Path, postgres: _Postgres) -> Iterator[Frontends]:
    url = postgres.new_url()
    migrate.upgrade(url)  # once, before both start (two processes would race to migrate)
    f = Frontends()
    try:
        for n in "ab":  # A publishes the first distribution; B then serves the same one
            f.procs[n] = _serve(_config(tmp_path, url, n, *f.ports[n]))
            _wait_http(f.procs[n], f"http://127.0.0.1:{f.ports[n][0]}/v1/health")
        yield f
    finally:
        f.stop()


async def _client(port: int) -> tuple[JdClient, SetPayoutDistribution]:
    c = await JdClient.connect(("127.0.0.1", port))
    await c.setup()
    dist = await c.expect(SetPayoutDistribution)
    await c.expect(SetSettlementMode)
    return c, dist


def test_tokens_bound_to_their_jd_server_and_limits_on_the_sum(frontends: Frontends) -> None:
    ports = frontends.ports

    async def jd_side() -> None:
        (a, dist_a), (b, dist_b) = await _client(ports["a"][1]), await _client(ports["b"][1])
        assert dist_a.distribution_id == dist_b.distribution_id
        decl = build_declaration(distribution_from_message(dist_a), _Genesis())  # type: ignore[arg-type]
        dist_id = dist_a.distribution_id

        # -- declarations per address: one limit over both servers ----------------------
        codes = []
        for i in range(6):
            c = (a, b)[i % 2]
            c.send(decl.message(bytes(16), 100 + i, dist_id))  # a token nobody issued
            reply = await c.expect(DeclareMiningJobError)
            codes.append(reply.error_code)
        assert codes.count("rate-limited") == 5, codes
        assert codes.count("invalid-mining-job-token") == 1, codes

        # -- a token of A declared on B: refused; on A: accepted ------------------------
        # -- token allocations per address: the second, on the other server, waits ------
        t0 = time.monotonic()
        tok = (await a.token(request_id=2)).mining_job_token
        assert time.monotonic() - t0 < 1.0
        await b.token(request_id=3)
        assert time.monotonic() - t0 >= 1 / DECLARE_RATE - 0.5  # held by A's allocation
        await asyncio.sleep(1 / DECLARE_RATE + 0.1)  # the address's next declaration
        b.send(decl.message(tok, 8, dist_id))
        reply_b = await b.expect(DeclareMiningJobError)
        assert reply_b.error_code == "invalid-mining-job-token"
        detail = bytes(reply_b.error_details).decode()
        assert detail.startswith(
            f"mining job token not issued by this JD server (token tag {TAGS['a']}; this is "
            f"JD server 'frontend-b', tag {TAGS['b']})"), detail
        await asyncio.sleep(1 / DECLARE_RATE + 0.1)
        a.send(decl.message(tok, 9, dist_id))
        ok = await a.expect(DeclareMiningJobSuccess)
        assert ok.request_id == 9
        a.close()
        b.close()

    asyncio.run(jd_side())

    # -- the API's public limit: ten over both APIs, not ten each -----------------------
    statuses = []
    with httpx.Client(timeout=10) as http:
        t0 = time.monotonic()
        for i in range(15):
            api = ports["ab"[i % 2]][0]
            statuses.append(http.get(f"http://127.0.0.1:{api}/v1/miners/nobody").status_code)
        assert time.monotonic() - t0 < 60  # 0.01/s: no token came back meanwhile
    assert statuses[:10] == [404] * 10 and statuses[10:] == [429] * 5, statuses
    r = httpx.get(f"http://127.0.0.1:{ports['b'][0]}/v1/miners/nobody", timeout=10)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1

    # -- what each process logged -------------------------------------------------------
    err = frontends.stop()
    for n in "ab":
        assert f"JD server listening on 127.0.0.1:{ports[n][1]} (server id 'frontend-{n}', " \
            "token tag " in err[n]
    foreign = "rejected: invalid-mining-job-token: mining job token not issued by this JD server " \
        f"(token tag {TAGS['a']}; this is JD server 'frontend-b'"
    assert foreign in err["b"]
    assert "over the address's limit" in err["a"] + err["b"]
