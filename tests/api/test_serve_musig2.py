"""``payouts serve`` in musig2 mode, end to end on the kernel node (SQLite and PostgreSQL).

The settings come from a TOML file with a ``[settlement.musig2]`` table (committee listed out of
KeySort order, fallback key and secret, timelock, fee rate). :func:`payouts.cli.serve_cmd.
make_runner` and :func:`~payouts.cli.serve_cmd.run_served` -- what ``payouts serve`` runs --
serve the API over HTTP (uvicorn), the JD server and the settlement runner in one loop. The real
JD client declares a job and pushes a solved block; the block is recorded with its coinbase and
tracked in musig2 mode (the output the mode builds is the coinbase's first output); at maturity
the signing session appears under ``/v1/musig2/sessions/block-<id>``, the committee signs it
over HTTP, the runner broadcasts the key-path spend and the block is paid once the kernel
confirms it. Then the process-level checks: ``payouts serve`` starts in musig2 mode from the
file, and stops with one clear line on a bad committee key or a CTV leaf the node cannot
enforce.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from api import store
from payouts.crypto import musig2 as mu
from payouts.crypto.schnorr import xonly_pubkey
from payouts.node.kernel import KernelNode
from payouts.node.kernel_chain import KernelChain
from payouts.served import ServedPool
from payouts.service import PoolService
from payouts.settings import load_settings
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.lifecycle_store import load_settlements, load_txs
from payouts.store.ledger import get_block, list_blocks
from payouts.tx.block import Block
from payouts.tx.transaction import Tx
from sv2.authority import encode_authority_secret_key
from sv2.jdc import JobDeclarationClient, JobTemplate, solve
from tests.api.musig2_signing import sign_session
from tests.api.settle_helpers import (
    FALLBACK_DELAY,
    FALLBACK_SK,
    add_miners_and_shares,
    miner_sk,
    signer_keys,
)
from tests.api.test_cli import _free_port, _wait_http
from tests.jds.helpers import AUTHORITY_PK, AUTHORITY_SK, KernelTestNode, setup_chain
from tests.lifecycle.helpers import MINER

T = TypeVar("T")
N = 4
POOL = "0014" + "aa" * 20


def committee_hex() -> list[str]:
    """The committee as an operator might list it: not in KeySort order."""
    keys = sorted(mu.individual_pubkey(miner_sk(i)).hex() for i in range(N))
    return keys[::-1]


def musig2_toml(data_dir: Path, api_port: int, jds_port: int, **musig2: str) -> str:
    table = {
        "committee": "[" + ", ".join(f'"{k}"' for k in committee_hex()) + "]",
        "fallback_key": f'"{xonly_pubkey(FALLBACK_SK).hex()}"',
        "fallback_timelock": str(FALLBACK_DELAY),
        "fee_rate": "2",
        "ctv_leaf": "false",
        "fallback_secret_key": f'"{FALLBACK_SK.hex()}"',
        **musig2,
    }
    lines = "\n".join(f"{k} = {v}" for k, v in table.items())
    return f"""\
network = "regtest"
data_dir = "{data_dir}"

[pool]
payout_script = "{POOL}"

[distribution]
mode = "musig2"

[settlement]
poll_interval_sec = 0.05

[settlement.musig2]
{lines}

[jds]
enabled = true
listen = "127.0.0.1:{jds_port}"
authority_secret_key = "{encode_authority_secret_key(AUTHORITY_SK)}"

[api]
port = {api_port}
"""


async def until(what: str, get: Callable[[], Awaitable[T] | T], timeout: float = 30.0) -> T:
    """Poll ``get`` (plain or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = get()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_serve_in_musig2_mode_tracks_opens_the_session_and_pays(
    api_engine: Engine, tmp_path: Path
) -> None:
    api_port, jds_port = _free_port(), _free_port()
    cfg = tmp_path / "payouts.toml"
    cfg.write_text(musig2_toml(tmp_path, api_port, jds_port))
    service = PoolService(load_settings(cfg), engine=api_engine, migrate=False)
    add_miners_and_shares(service, N)
    secret, _ = store.create_token(service.engine, "ops", ["read"])
    auth = {"Authorization": f"Bearer {secret}"}
    keys = signer_keys(N)

    async def scenario(chain: KernelChain) -> None:
        node = KernelNode(chain)
        pool = ServedPool(service.settings, service=service, node=node, rate_limit=None)
        runner = pool.runner
        assert runner.mode.musig2 is not None
        assert runner.mode.musig2.committee == tuple(bytes.fromhex(k)
                                                     for k in sorted(committee_hex()))
        assert runner.lifecycle.fallback_signer is not None
        server = uvicorn.Server(uvicorn.Config(pool.app,
                                               host="127.0.0.1", port=api_port,
                                               log_config=None, access_log=False))
        served = asyncio.create_task(pool.run(server))
        base = f"http://127.0.0.1:{api_port}"
        try:
            await until("the API", lambda: server.started or served.done())
            assert not served.done()
            # A miner's JD client declares a job in musig2 mode (SetSettlementMode carries
            # the committee) and pushes the solved block.
            async with JobDeclarationClient("127.0.0.1", jds_port, AUTHORITY_PK,
                                            timeout=5.0) as jdc:
                template = JobTemplate.from_block_template(
                    await KernelTestNode(chain).block_template())
                job = await jdc.declare_job(template)
                jdc.push_solution(job, solve(template, job.coinbase,
                                             bytes.fromhex("0011223344556677")))
                (rec,) = await until("the block", lambda: list_blocks(service.engine))
            # Recorded with its coinbase and tracked in musig2 mode: the output the mode
            # builds from the block's distribution is the coinbase's first output.
            raw = await node.get_block(rec.block_hash)
            assert raw is not None
            coinbase = Block.parse(raw).txs[0]
            assert rec.distribution_id is not None
            out = runner.mode.musig2.build(service.distribution(rec.distribution_id).distribution,
                                           rec.revenue)
            assert coinbase.outputs[0] == out.txout
            # The block's row commits first, then the runner tracks it in a transaction of
            # its own (a crash between the two is tracked at start-up): wait for the second.
            s = await until("the settlement", lambda: load_settlements(service.engine).get(rec.id))
            assert (s.mode, s.funding_script, s.funding_value) == (
                "musig2", out.txout.script, out.txout.value)
            await until("confirmed", lambda: get_block(service.engine, rec.id).status  # type: ignore[union-attr]
                        == "confirmed")
            sid = f"block-{rec.id}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                assert (await http.get(f"/v1/musig2/sessions/{sid}")).status_code == 404
                tip = (await node.tip()).height
                await node.generate_to_script(first_mature_tip(rec.height) - tip, MINER)
                # At maturity the runner opens the session; the API serves it.
                view = (await until("the signing session", lambda: _session(http, sid))).json()
                assert view["state"] == "collecting-nonces"
                assert view["pubkeys"] == sorted(committee_hex())
                assert view["output_key"] == out.output_key.hex()
                one = (await http.get(f"/v1/settlements/{rec.id}", headers=auth)).json()
                assert (one["status"], one["mode"], one["signing_session"]) == (
                    "mature", "musig2", sid)
            session = runner.lifecycle.session(rec.id)
            assert session is not None
            with httpx.Client(base_url=base, timeout=10) as sync_http:
                done = await asyncio.to_thread(
                    sign_session, sync_http.get,
                    lambda url, body: sync_http.post(url, json=body), sid, session, keys)
            assert done["state"] == "complete"
            (row,) = await until("the cooperative spend", lambda: [
                r for r in load_txs(service.engine, rec.id) if r.status == "broadcast"])
            assert row.role == "cooperative"
            await node.generate_to_script(1, MINER)
            await until("paid", lambda: get_block(service.engine, rec.id).status  # type: ignore[union-attr]
                        == "paid")
            for n, o in enumerate(Tx.parse(row.raw).outputs):
                utxo = await node.get_utxo(row.txid, n)
                assert utxo is not None and (utxo.value, utxo.script) == (o.value, o.script)
        finally:
            server.should_exit = True
            await served
        assert runner._task is None  # stopped with the server

    with KernelChain() as chain:
        setup_chain(chain)
        asyncio.run(scenario(chain))


async def _session(http: httpx.AsyncClient, sid: str) -> httpx.Response | None:
    r = await http.get(f"/v1/musig2/sessions/{sid}")
    return r if r.status_code == 200 else None


def _serve(tmp_path: Path, toml: str) -> subprocess.Popen[str]:
    cfg = tmp_path / "payouts.toml"
    cfg.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    return subprocess.Popen([sys.executable, "-m", "payouts", "serve", "--config", str(cfg)],
                            env=env, stderr=subprocess.PIPE, text=True)


def test_payouts_serve_process_starts_in_musig2_mode(tmp_path: Path) -> None:
    port = _free_port()
    proc = _serve(tmp_path, musig2_toml(tmp_path, port, _free_port()))
    try:
        r = _wait_http(proc, f"http://127.0.0.1:{port}/v1/health")
        assert r.json()["status"] == "ok"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert (f"settlement lifecycle in musig2 mode (committee of {N}, fallback after "
            f"{FALLBACK_DELAY} blocks, signed here, CTV leaf off)") in err
    assert "JD server listening" in err and "not started" not in err


@pytest.mark.parametrize(("override", "message"), [
    ({"committee": '["02" ]'}, "settlement.musig2.committee: Value error, committee key 0 must "
                               "be 33 bytes"),
    ({"fallback_timelock": "100"}, "settlement.musig2.fallback_timelock: Input should be "
                                   "greater than or equal to 101"),
    ({"ctv_leaf": "true"}, "settlement.musig2.ctv_leaf = true, but CTV (BIP-119) is not active "
                           "on this node"),
])
def test_payouts_serve_refuses_bad_musig2_settings(tmp_path: Path, override: dict[str, str],
                                                   message: str) -> None:
    proc = _serve(tmp_path, musig2_toml(tmp_path, _free_port(), _free_port(), **override))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert message in err
    assert "settlement lifecycle in musig2 mode" in err or "ctv_leaf" not in message


def test_committee_listed_twice_or_off_curve_is_refused(tmp_path: Path) -> None:
    from payouts.errors import ConfigError

    cfg = tmp_path / "p.toml"
    dup = committee_hex()[0]
    for committee, message in ((f'["{dup}", "{dup}"]', f"committee key {dup} is listed twice"),
                               ('["02' + "00" * 32 + '"]', "is not a compressed curve point")):
        cfg.write_text(musig2_toml(tmp_path, 1, 2, committee=committee))
        with pytest.raises(ConfigError, match=message):
            load_settings(cfg)
