"""Crash tests with real processes (issue #13): ``payouts serve`` against a bitcoind regtest
node, killed with SIGKILL at every lifecycle stage, restarted, and checked on chain and in the
store.

One run (:func:`run_crash_rounds`) drives blocks through every stage of a musig2-mode pool, the
mode with the most stages, and kills the process while each stage's work is under way:

- ``found``: a JD client declares a job and pushes the solved block (after submitting it to the
  node itself first, as its Template Provider does: the server hears ``duplicate``); the
  process is killed before the block's record commits and between that commit and its
  settlement row (test-only crash points, :mod:`payouts.crash_points`), and at random moments;
- ``confirmed``: a block is mined on top; ``mature``: the chain reaches coinbase maturity and
  the runner opens the committee's signing session; ``signing``: some signers' nonces are in;
  ``broadcast``: the committee has signed and the runner sends the key-path spend;
- ``fallback``: an operator gives up the cooperative spend (``POST .../fallback``) and the
  runner sends the timelocked script-path spend;
- ``reorg``: the block is invalidated and replaced, then reconsidered and returns.

While blocks are being found, share batches are posted to ``POST /v1/shares`` from another
thread; every batch acknowledged before a kill must be stored once.

Every kill is ``SIGKILL`` (no shutdown code runs) at ``uniform(0, max_delay)`` seconds after the
stage's action, or at a named crash point; every restart must converge. The checks at the end
(:func:`check_invariants`): every block recorded once; every paid block's settlement output
spent by exactly one settlement tx, whose outputs are unspent in the UTXO set with their
amounts; every ledger line written once per time its block was in the chain (and reversed
exactly when it left); every acknowledged share stored exactly once.

Used by ``tests/crash`` (a few kills per stage, in ``make test``) and ``benchmarks/crash_serve``
(``--kills N`` random kills per stage, in ``make fuzz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from payouts.crypto import musig2 as mu
from payouts.crypto import schnorr
from payouts.crypto.schnorr import xonly_pubkey
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.musig2.session import nonce_auth_message
from payouts.tx.hashes import display_hex, sha256
from regtest.harness import RegtestNode, free_port

STAGES = ("found", "confirmed", "mature", "signing", "broadcast", "fallback", "reorg")
COMMITTEE = 3
FALLBACK_DELAY = 101  # the smallest timelock above coinbase maturity
BURN = "0014" + "ee" * 20  # blocks mined by the harness pay here
POOL = "0014" + "aa" * 20
WAIT_S = 60.0


def miner_sk(i: int) -> bytes:
    return sha256(b"crash serve: miner " + i.to_bytes(4, "big"))


def miner_script(i: int) -> bytes:
    return b"\x51\x20" + xonly_pubkey(miner_sk(i))


FALLBACK_SK = sha256(b"crash serve: fallback key")
AUTHORITY_SK = sha256(b"crash serve: JDS authority key")


@dataclass
class Report:
    """Kills per stage (and how: ``random`` or a crash point), restarts, blocks, shares."""

    kills: Counter[str] = field(default_factory=Counter)
    how: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    restarts: int = 0
    blocks: int = 0
    shares_acknowledged: int = 0
    share_batches_lost: int = 0  # posts not acknowledged (process down or killed mid-request)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"{'stage':<10} {'kills':>5}  how"]
        for s in STAGES:
            how = ", ".join(f"{k} {v}" for k, v in sorted(self.how[s].items()))
            out.append(f"{s:<10} {self.kills[s]:>5}  {how}")
        out.append(f"total kills {sum(self.kills.values())}, restarts {self.restarts}, "
                   f"blocks {self.blocks}, shares acknowledged {self.shares_acknowledged} "
                   f"(posts that found the process down or were cut by a kill: "
                   f"{self.share_batches_lost}), {self.seconds:.0f} s")
        return out


class ServeProcess:
    """``payouts serve`` on a bitcoind regtest node, started, killed and restarted."""

    def __init__(self, node: RegtestNode, workdir: Path, *, database_url: str | None = None,
                 say: Callable[[str], None] = lambda _: None) -> None:
        from api import store
        from payouts.service import PoolService
        from payouts.settings import load_settings
        from sv2.authority import authority_public_key

        self.node, self.workdir, self.say = node, workdir, say
        self.api_port, self.jds_port = free_port(), free_port()
        self.config = workdir / "payouts.toml"
        self.config.write_text(self._toml(database_url))
        self.log = workdir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.authority_pk = authority_public_key(AUTHORITY_SK)
        # Each signer's secret nonce for the nonce it last posted to a session, kept across
        # calls as a real signer keeps it (``payouts musig2 sign``): sessions are in the store
        # (a restarted process resumes them with the nonces already posted).
        self.secnonces: dict[tuple[str, int], Any] = {}
        svc = PoolService(load_settings(self.config))
        for i in range(COMMITTEE + 2):
            svc.register_miner(f"m{i}", miner_script(i))
        self.token, _ = store.create_token(svc.engine, "crash", ["admin"])
        self.engine = svc.engine
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.http = httpx.Client(base_url=self.base, timeout=10,
                                 headers={"Authorization": f"Bearer {self.token}"})

    def _toml(self, database_url: str | None) -> str:
        from sv2.authority import encode_authority_secret_key

        keys = sorted(mu.individual_pubkey(miner_sk(i)).hex() for i in range(COMMITTEE))
        db = f'database_url = "{database_url}"\n' if database_url else ""
        return f"""\
network = "regtest"
data_dir = "{self.workdir}"
{db}
[pool]
payout_script = "{POOL}"

[node]
backend = "bitcoind"
rpc_url = "{self.node.rpc_url}"
rpc_user = "{self.node.rpc_user}"
rpc_password = "{self.node.rpc_password}"

[accounting]
pin_difficulty = 100000

[distribution]
mode = "musig2"

[settlement]
poll_interval_sec = 0.1

[settlement.musig2]
committee = [{", ".join(f'"{k}"' for k in keys)}]
fallback_key = "{xonly_pubkey(FALLBACK_SK).hex()}"
fallback_timelock = {FALLBACK_DELAY}
fee_rate = 2
ctv_leaf = false
fallback_secret_key = "{FALLBACK_SK.hex()}"

[jds]
enabled = true
listen = "127.0.0.1:{self.jds_port}"
authority_secret_key = "{encode_authority_secret_key(AUTHORITY_SK)}"

[api]
port = {self.api_port}
"""

    # -- the process ----------------------------------------------------------------------------

    def start(self, crash_at: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PAYOUTS_") or k == "PAYOUTS_SKIP_BITCOIND_BUILD"}
        if crash_at:
            env["PAYOUTS_TEST_CRASH_AT"] = crash_at
        with open(self.log, "ab") as log:
            log.write(f"--- start (crash point {crash_at})\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "payouts", "serve", "--config", str(self.config),
                 "--no-rate-limit"], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if self.http.get("/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"payouts serve exited at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"payouts serve did not answer:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL (no shutdown code runs) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def died(self, timeout: float = WAIT_S) -> bool:
        """Wait for the process to end by itself (a crash point)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def terminate(self) -> None:
        """SIGTERM: the clean shutdown (last snapshot, servers stopped)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def stop(self) -> None:
        self.terminate()
        self.http.close()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- mining ---------------------------------------------------------------------------------

    def find_block(self, *, submit_first: bool) -> tuple[bytes, int]:
        """A JD client declares a job on the node's template and pushes the solved block
        (after submitting it to the node itself when ``submit_first``, as its Template Provider
        would). Returns (block hash, height)."""
        return asyncio.run(self._find(submit_first))

    async def _find(self, submit_first: bool) -> tuple[bytes, int]:
        from sv2.jdc import JobDeclarationClient, JobTemplate, solve
        from sv2.jdc.errors import JdcConnectionLost

        node = self.node.node()
        jdc = JobDeclarationClient("127.0.0.1", self.jds_port, self.authority_pk, timeout=10.0)
        try:
            await jdc.__aenter__()
            template = JobTemplate.from_block_template(await node.block_template())
            job = await jdc.declare_job(template)
            sol = solve(template, job.coinbase, os.urandom(job.coinbase.parts.extranonce_size))
            if submit_first:
                reason = await node.submit_block(sol.block.serialize())
                assert reason is None, reason
            jdc.push_solution(job, sol)
            await asyncio.sleep(0.1)  # the frame leaves before the connection closes
        finally:
            # The server may be gone by now (a crash point right after the push).
            with contextlib.suppress(JdcConnectionLost, OSError, ConnectionError, TimeoutError):
                await jdc.__aexit__(None, None, None)
            await node.aclose()
        return sol.block.hash, template.height

    def mine(self, n: int) -> None:
        self.node.call("generatetodescriptor", n, f"raw({BURN})")

    def tip(self) -> int:
        return int(self.node.call("getblockcount"))

    # -- the store and the API ----------------------------------------------------------------

    def block(self, block_hash: bytes) -> Any:
        from payouts.store.ledger import get_block_by_hash

        return get_block_by_hash(self.engine, block_hash)

    def settled(self, block_id: int) -> Any:
        from payouts.settlement.lifecycle_store import load_settlements

        return load_settlements(self.engine).get(block_id)

    def spends(self, block_id: int) -> list[Any]:
        from payouts.settlement.lifecycle_store import load_txs

        return [r for r in load_txs(self.engine, block_id)
                if r.role in ("cooperative", "fallback")]

    def session(self, block_id: int) -> dict[str, Any] | None:
        try:
            r = self.http.get(f"/v1/musig2/sessions/block-{block_id}")
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    def sign(self, block_id: int, signers: range | None = None, *, partial: bool = True
             ) -> dict[str, Any] | None:
        """The committee (or ``signers`` of it) posts nonces, then (``partial``) partial
        signatures, through the API, as ``payouts musig2 sign`` does. None if the session is
        not there (the process is down or re-opening it)."""
        sid = f"block-{block_id}"
        url = f"/v1/musig2/sessions/{sid}"
        view = self.session(block_id)
        if view is None or view["failure"]:
            return view
        pubkeys = [bytes.fromhex(p) for p in view["pubkeys"]]
        keys = {mu.individual_pubkey(miner_sk(i)): miner_sk(i) for i in range(COMMITTEE)}
        keyagg = mu.key_agg(pubkeys)
        root = view.get("taproot_merkle_root")
        if root is not None:
            keyagg = keyagg.taproot_tweak(bytes.fromhex(root))
        msg = bytes.fromhex(view["sighash"])
        secnonces = self.secnonces
        try:
            for i, pk in enumerate(pubkeys):
                if signers is not None and i not in signers:
                    continue
                if i not in view["missing_nonces"]:
                    continue
                sn, pn = mu.nonce_gen(keys[pk], pk, keyagg, msg)
                secnonces[(sid, i)] = sn
                auth = schnorr.sign(nonce_auth_message(sid, i, pn), keys[pk])
                self.http.post(f"{url}/nonces", json={"signer_index": i, "pubnonce": pn.hex(),
                                                      "auth": auth.hex()})
            if not partial:
                return self.session(block_id)
            view = self.session(block_id)
            if view is None or not view["aggnonce"] or any(
                    (sid, i) not in secnonces for i in view["missing_partial_sigs"]):
                return view
            ctx = mu.SessionContext(bytes.fromhex(view["aggnonce"]), keyagg, msg)
            for i, pk in enumerate(pubkeys):
                if i not in view["missing_partial_sigs"]:
                    continue
                psig = mu.partial_sign(secnonces[(sid, i)], keys[pk], ctx)
                self.http.post(f"{url}/partial-signatures",
                               json={"signer_index": i, "psig": psig.hex()})
        except httpx.TransportError:
            return None
        return self.session(block_id)


class ShareFeeder(threading.Thread):
    """Posts share batches until stopped; remembers the keys of every acknowledged batch."""

    def __init__(self, pool: ServeProcess, tag: str) -> None:
        super().__init__(daemon=True)
        self.pool, self.tag = pool, tag
        self.acknowledged: list[str] = []
        self.cut = 0
        self.stopping = threading.Event()
        self.batch = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.pool.base, timeout=5, headers={
                "Authorization": f"Bearer {self.pool.token}"}) as http:
            while not self.stopping.is_set():
                keys = [f"{self.tag}-{self.batch}-{j}" for j in range(20)]
                now_ms = int(time.time() * 1000)  # recent: nothing for [retention] to prune
                body = {"key": keys, "account": [f"m{j % (COMMITTEE + 2)}" for j in range(20)],
                        "worker": ["w"] * 20, "difficulty": [1000 + j for j in range(20)],
                        "job_id": ["j"] * 20, "revenue": [312_500_000] * 20,
                        "time_ms": [now_ms + j for j in range(20)]}
                self.batch += 1
                try:
                    r = http.post("/v1/shares", json=body)
                except httpx.TransportError:
                    self.cut += 1
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    self.acknowledged += keys
                time.sleep(0.1)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def until(what: str, get: Callable[[], Any], pool: ServeProcess,
          timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{pool.tail()}")
        time.sleep(0.05)


@dataclass
class Killer:
    """Kills the pool at ``uniform(0, max_delay)`` s after a stage's action, then restarts it."""

    pool: ServeProcess
    rng: random.Random
    report: Report
    max_delay: float

    def random_kill(self, stage: str) -> None:
        time.sleep(self.rng.uniform(0, self.max_delay))
        self.pool.kill()
        self._count(stage, "random")
        self.pool.start()

    def crash_point(self, stage: str, name: str, action: Callable[[], Any]) -> None:
        """Restart with the crash point armed, run ``action``, wait for the process to kill
        itself there, restart normally."""
        self.pool.terminate()  # a clean stop: only the crash point counts as a kill
        self.pool.start(crash_at=name)
        action()
        assert self.pool.died(), f"crash point {name} was never reached\n{self.pool.tail()}"
        self._count(stage, f"crash point {name}")
        self.pool.start()

    def _count(self, stage: str, how: str) -> None:
        self.report.kills[stage] += 1
        self.report.how[stage][how] += 1
        self.report.restarts += 1


def found_stage(pool: ServeProcess, k: Killer, kills: int, crash_point: str | None) -> Any:
    """Find a block and kill around its recording; returns its store record once settled."""
    found: list[tuple[bytes, int]] = []
    if crash_point is not None:
        k.crash_point("found", crash_point,
                      lambda: found.append(pool.find_block(submit_first=True)))
    else:
        found.append(pool.find_block(submit_first=True))
    for _ in range(kills):
        k.random_kill("found")
    block_hash, _ = found[0]
    rec = until(f"block {display_hex(block_hash)} recorded",
                lambda: pool.block(block_hash), pool)
    until("its settlement row", lambda: pool.settled(rec.id), pool)
    from payouts.store import repositories as repo

    assert rec.distribution_id is not None
    until("the distribution that follows it",
          lambda: (repo.last_distribution_id(pool.engine) or 0) > rec.distribution_id, pool)
    k.report.blocks += 1
    return rec


def status(pool: ServeProcess, block_id: int, *wanted: str) -> bool:
    from payouts.store.ledger import get_block

    b = get_block(pool.engine, block_id)
    return b is not None and b.status in wanted


def confirmed_stage(pool: ServeProcess, k: Killer, kills: int, block_id: int) -> None:
    pool.mine(1)
    for _ in range(kills):
        k.random_kill("confirmed")
    until("confirmed", lambda: status(pool, block_id, "confirmed"), pool)


def mature_stage(pool: ServeProcess, k: Killer, kills: int, block_id: int, height: int) -> None:
    pool.mine(first_mature_tip(height) - pool.tip())
    for _ in range(kills):
        k.random_kill("mature")
    until("mature", lambda: status(pool, block_id, "mature"), pool)
    until("the signing session", lambda: pool.session(block_id), pool)


def signing_stage(pool: ServeProcess, k: Killer, kills: int, block_id: int) -> None:
    for _ in range(kills):
        until("the signing session", lambda: pool.session(block_id), pool)
        pool.sign(block_id, range(COMMITTEE - 1), partial=False)  # some nonces are in
        k.random_kill("signing")


def broadcast_stage(pool: ServeProcess, k: Killer, kills: int, block_id: int) -> None:
    """The committee signs; the process is killed while the runner sends the spend; after each
    restart the committee signs again if the signature died with the process."""
    def signed_or_sent() -> bool:
        if pool.spends(block_id):
            return True
        view = pool.sign(block_id)
        return bool(view and view["signature"])

    until("the committee's signature", signed_or_sent, pool)
    for _ in range(kills):
        k.random_kill("broadcast")
        until("the cooperative spend (signed again if need be)", signed_or_sent, pool)
    until("the cooperative spend sent", lambda: [
        r for r in pool.spends(block_id) if r.status in ("broadcast", "confirmed")], pool)
    pool.mine(1)
    until("paid", lambda: status(pool, block_id, "paid"), pool)


def fallback_stage(pool: ServeProcess, k: Killer, kills: int, block_id: int,
                   height: int) -> None:
    pool.mine(max(0, height + FALLBACK_DELAY - 1 - pool.tip()))
    until("mature", lambda: status(pool, block_id, "mature"), pool)

    def asked() -> bool:
        if pool.spends(block_id):
            return True
        try:
            r = pool.http.post(f"/v1/settlements/{block_id}/fallback")
        except httpx.TransportError:
            return False
        return r.status_code == 200

    until("the fallback accepted", asked, pool)
    for _ in range(kills):
        k.random_kill("fallback")
        until("the fallback (asked again if need be)", asked, pool)
    until("the fallback spend sent", lambda: [
        r for r in pool.spends(block_id) if r.status in ("broadcast", "confirmed")], pool)
    pool.mine(1)
    until("paid", lambda: status(pool, block_id, "paid"), pool)


def reorg_stage(pool: ServeProcess, k: Killer, kills: int, block_hash: bytes,
                block_id: int) -> None:
    """Invalidate the (confirmed) block and mine a rival: orphaned; reconsider it: its longer
    branch returns and the block is recorded live again, once."""
    h = display_hex(block_hash)
    pool.node.call("invalidateblock", h)
    pool.mine(1)
    for _ in range(kills):
        k.random_kill("reorg")
    until("orphaned", lambda: status(pool, block_id, "orphaned"), pool)
    pool.node.call("reconsiderblock", h)
    until("back in the chain", lambda: status(pool, block_id, "found", "confirmed"), pool)


def run_crash_rounds(node: RegtestNode, workdir: Path, *, kills: int, rounds: int = 1,
                     seed: int = 13, max_delay: float = 0.4, database_url: str | None = None,
                     say: Callable[[str], None] = lambda _: None) -> Report:
    """``rounds`` times: block A through found → confirmed → mature → signing → broadcast →
    paid, block B through found → confirmed → reorg → mature → fallback → paid, ``kills``
    random kills per stage (plus the two crash points of ``found`` in the first round). Then
    :func:`check_invariants`. Returns the report."""
    t0 = time.monotonic()
    report = Report()
    pool = ServeProcess(node, workdir, database_url=database_url, say=say)
    k = Killer(pool, random.Random(seed), report, max_delay)
    pool.start()
    feeder = ShareFeeder(pool, f"r{seed}")
    feeder.start()
    try:
        for r in range(rounds):
            say(f"round {r + 1}/{rounds}: block A (cooperative spend)")
            a = found_stage(pool, k, kills, "found" if r == 0 else None)
            confirmed_stage(pool, k, kills, a.id)
            mature_stage(pool, k, kills, a.id, a.height)
            signing_stage(pool, k, kills, a.id)
            broadcast_stage(pool, k, kills, a.id)
            say(f"round {r + 1}/{rounds}: block B (reorg, fallback)")
            b = found_stage(pool, k, kills, "recorded" if r == 0 else None)
            confirmed_stage(pool, k, 0, b.id)
            reorg_stage(pool, k, kills, b.block_hash, b.id)
            fallback_stage(pool, k, kills, b.id, b.height)
            say(f"round {r + 1}/{rounds}: {sum(report.kills.values())} kills so far")
    finally:
        feeder.stop()
    report.shares_acknowledged = len(feeder.acknowledged)
    report.share_batches_lost = feeder.cut
    try:
        check_invariants(pool, feeder.acknowledged)
    finally:
        pool.stop()
    report.seconds = time.monotonic() - t0
    return report


def check_invariants(pool: ServeProcess, acknowledged: list[str]) -> None:
    """Every block recorded once and paid exactly once on chain; every ledger line once per
    time its block was live; every acknowledged share stored once."""
    from sqlalchemy import text

    from payouts.settlement.lifecycle_store import load_settlements, load_txs
    from payouts.store.ledger import export_ledger, list_blocks
    from payouts.tx.transaction import Tx

    blocks = list_blocks(pool.engine)
    assert len({b.block_hash for b in blocks}) == len(blocks), "a block recorded twice"
    settlements = load_settlements(pool.engine)
    for b in blocks:
        assert b.status == "paid", f"block {b.id} ended {b.status}"
        s = settlements[b.id]
        assert s.funding_txid is not None
        # The settlement output is spent (gettxout: unspent outputs only) ...
        assert pool.node.call("gettxout", display_hex(s.funding_txid), s.funding_vout) is None
        # ... by exactly one settlement tx, whose outputs are unspent with their amounts.
        spends = [r for r in load_txs(pool.engine, b.id)
                  if r.role in ("cooperative", "fallback") and r.status == "confirmed"]
        assert len(spends) == 1, f"block {b.id}: {len(spends)} confirmed spends"
        tx = Tx.parse(spends[0].raw)
        assert tx.inputs[0].prevout.txid == s.funding_txid
        for n, o in enumerate(tx.outputs):
            utxo = pool.node.call("gettxout", display_hex(tx.txid), n)
            assert utxo is not None, f"block {b.id}: output {n} of its spend is missing"
            assert round(float(utxo["value"]) * 100_000_000) == o.value
    lines = export_ledger(pool.engine)
    credits: Counter[tuple[Any, ...]] = Counter()
    net: Counter[tuple[Any, ...]] = Counter()
    for e in lines:
        net[(e["block_id"], e["miner_id"])] += e["amount"]
        if e["reason"] != "reorg":
            credits[(e["block_id"], e["miner_id"], e["reason"], e["amount"])] += 1
    reversals = Counter(e["block_id"] for e in lines if e["reason"] == "reorg")
    for (block_id, miner_id, _reason, amount), n in credits.items():
        # Written once per time the block entered the chain: once, or twice for the block that
        # was reorged out (its lines reversed) and came back.
        assert n == (2 if reversals[block_id] else 1), (block_id, miner_id, n)
        assert net[(block_id, miner_id)] == amount, (block_id, miner_id)
    with pool.engine.connect() as conn:
        stored = Counter(k for (k,) in conn.execute(text("SELECT share_key FROM shares")))
    missing = [key for key in acknowledged if stored[key] != 1]
    assert not missing, f"{len(missing)} acknowledged shares not stored once: {missing[:5]}"


__all__ = ["STAGES", "Report", "ServeProcess", "check_invariants", "run_crash_rounds"]
