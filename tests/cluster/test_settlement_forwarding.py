"""Settlement in musig2 mode on a cluster of real ``payouts serve`` processes (issue 15): one
PostgreSQL, one bitcoind regtest node, a JD frontend, an API frontend and leader-capable
processes; a signer committee (regtest/crash_serve.py's keys) posts nonces and partial
signatures to the FRONTENDS, never to the leader.

- the leader is SIGKILLed at the signing stage (nonces partly posted, then partial signatures
  partly posted) and at the broadcast stage (right after the cooperative spend is broadcast,
  before it confirms): each time a standby takes over within 5 s, the session resumes from the
  store with every nonce and partial signature posted so far, and the block is paid exactly
  once (one spend of the coinbase output, the outputs rebuilt here from the distribution, no
  ledger line twice, one session);
- the operator's actions forwarded from a frontend: ``broadcast`` too early is the runner's
  409 ``not-mature``, ``fallback`` before its timelock is 409 ``fallback-locked``; with the
  leader stopped, a fallback is 503 ``no-leader`` and no leader acts on it afterwards; the
  same fallback sent to both frontends at once is one request, acted on once, and pays the
  block through the script-path spend."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from payouts.crypto import musig2 as mu
from payouts.crypto import schnorr
from payouts.crypto.schnorr import xonly_pubkey
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.lifecycle_rules import first_mature_tip
from payouts.settlement.modes import mode_from_settings
from payouts.settlement.musig2.session import nonce_auth_message
from payouts.settlement.musig2.spend import build_fallback_spend
from payouts.tx.hashes import display_hex
from payouts.tx.transaction import OutPoint, Tx
from payouts.tx.txout import TxOut
from regtest.crash_serve import COMMITTEE, FALLBACK_DELAY, FALLBACK_SK, miner_sk
from sv2.jdc import JobDeclarationClient
from tests.cluster.conftest import MINERS, POOL_SCRIPT, Cluster, Member, shares, wait_until
from tests.jds.helpers import AUTHORITY_PK

pytestmark = [pytest.mark.postgres, pytest.mark.bitcoind]

MUSIG2 = {
    "committee": sorted(mu.individual_pubkey(miner_sk(i)).hex() for i in range(COMMITTEE)),
    "fallback_key": xonly_pubkey(FALLBACK_SK).hex(),
    "fallback_timelock": FALLBACK_DELAY,
    "fee_rate": 2,
    "ctv_leaf": False,
    "fallback_secret_key": FALLBACK_SK.hex(),
}
TAKEOVER_S = 5.0
WAIT_S = 60.0  # what a loaded 2-core machine may need for a step that normally takes 1 s


def _musig2(c: Cluster) -> None:
    c.extra.update(PAYOUTS_DISTRIBUTION__MODE="musig2",
                   PAYOUTS_SETTLEMENT__MUSIG2=json.dumps(MUSIG2))


class Signers:
    """The committee: each signer keeps its secret nonce across calls (as ``payouts musig2
    sign`` does) and talks to whichever frontend it is given."""

    def __init__(self, c: Cluster, block_id: int) -> None:
        self.c = c
        self.sid = f"block-{block_id}"
        self.path = f"/v1/musig2/sessions/{self.sid}"
        self.keys = {mu.individual_pubkey(miner_sk(i)): miner_sk(i) for i in range(COMMITTEE)}
        self.secnonces: dict[int, Any] = {}

    def view(self, m: Member) -> dict[str, Any]:
        r = self.c.get(m, self.path)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def _ctx(self, view: dict[str, Any]) -> tuple[list[bytes], Any, bytes]:
        pubkeys = [bytes.fromhex(p) for p in view["pubkeys"]]
        keyagg = mu.key_agg(pubkeys)
        if view.get("taproot_merkle_root"):
            keyagg = keyagg.taproot_tweak(bytes.fromhex(view["taproot_merkle_root"]))
        return pubkeys, keyagg, bytes.fromhex(view["sighash"])

    def nonces(self, m: Member, signers: list[int]) -> dict[str, Any]:
        view = self.view(m)
        pubkeys, keyagg, msg = self._ctx(view)
        for i in signers:
            sn, pn = mu.nonce_gen(self.keys[pubkeys[i]], pubkeys[i], keyagg, msg)
            self.secnonces[i] = sn
            auth = schnorr.sign(nonce_auth_message(self.sid, i, pn), self.keys[pubkeys[i]])
            r = self.c.post(m, f"{self.path}/nonces", {"signer_index": i, "pubnonce": pn.hex(),
                                                       "auth": auth.hex()})
            assert r.status_code == 200, r.text
        return self.view(m)

    def partials(self, m: Member, signers: list[int]) -> dict[str, Any]:
        view = self.view(m)
        pubkeys, keyagg, msg = self._ctx(view)
        ctx = mu.SessionContext(bytes.fromhex(view["aggnonce"]), keyagg, msg)
        for i in signers:
            psig = mu.partial_sign(self.secnonces[i], self.keys[pubkeys[i]], ctx)
            r = self.c.post(m, f"{self.path}/partial-signatures",
                            {"signer_index": i, "psig": psig.hex()})
            assert r.status_code == 200, r.text
        return self.view(m)


def _epoch(c: Cluster) -> tuple[int, str]:
    ((epoch, holder),) = c.sql("SELECT epoch, holder FROM leader_lease")
    return int(epoch), str(holder)


def _count(c: Cluster, m: Member) -> int:
    r = c.get(m, "/v1/window")
    return int(r.json()["share_count"]) if r.status_code == 200 else -1


def _tip(c: Cluster) -> int:
    assert c.regtest is not None
    return int(c.regtest.call("getblockcount"))


def _mine(c: Cluster, n: int) -> None:
    assert c.regtest is not None
    if n > 0:
        c.regtest.call("generatetodescriptor", n, "raw(51)")


def _leader(c: Cluster, leaders: list[Member]) -> Member:
    holder = _epoch(c)[1]
    (m,) = [m for m in leaders if m.proc.poll() is None and holder.endswith(f":{m.port}")]
    return m


def _kill_leader(c: Cluster, leaders: list[Member], stage: str) -> float:
    """SIGKILL the leader; returns how long the takeover took (asserted within 5 s)."""
    epoch = _epoch(c)[0]
    old = _leader(c, leaders)
    old.proc.send_signal(signal.SIGKILL)
    old.proc.wait(10)
    took = wait_until(lambda: _epoch(c)[0] == epoch + 1, TAKEOVER_S,
                      f"a standby takes over within 5 s at {stage}")
    assert _leader(c, leaders) is not old
    return took


def _start(c: Cluster, *, leaders: int, fe2_timeout: str | None = None
           ) -> tuple[Member, Member, list[Member]]:
    """A JD frontend, an API frontend and ``leaders`` leader-capable processes; 60 shares and
    a distribution published through the API frontend (forwarded)."""
    _musig2(c)
    fe = c.start("jds", jds=True)
    fe2 = c.start("api") if fe2_timeout is None else c.start(
        "api", PAYOUTS_CLUSTER__REQUEST_TIMEOUT_SEC=fe2_timeout)
    ls = [c.start("leader") for _ in range(leaders)]
    wait_until(lambda: _epoch(c)[0] == 1, WAIT_S, "a leader elected")
    assert c.post(fe, "/v1/shares", shares(0, 60, "k")).json()["accepted"] == 60
    wait_until(lambda: _count(c, fe2) == 60, WAIT_S, "60 shares in the window")
    return fe, fe2, ls


def _find_block(c: Cluster, fe: Member, published: int) -> int:
    """A JD client on ``fe`` declares a job on distribution ``published`` and pushes the
    solved block; returns the block's id once the leader recorded it."""
    from sv2.jdc import JobTemplate, solve

    async def find() -> None:
        node = c.regtest.node()  # type: ignore[union-attr]
        try:
            async with JobDeclarationClient("127.0.0.1", fe.jds_port or 0, AUTHORITY_PK,
                                            timeout=30.0) as jdc:
                await jdc.wait_for_distribution(after=published - 1, timeout=WAIT_S)
                template = JobTemplate.from_block_template(await node.block_template())
                job = await jdc.declare_job(template)
                jdc.push_solution(job, solve(template, job.coinbase))
                await asyncio.sleep(1.0)
        finally:
            await node.aclose()

    asyncio.run(find())
    wait_until(lambda: c.sql("SELECT 1 FROM settlements"), WAIT_S,
               "the leader recorded and tracked the block")
    ((block_id, height, status),) = c.sql("SELECT id, height, status FROM blocks")
    assert height == 102 and status in ("found", "confirmed")
    return int(block_id)


def _publish(c: Cluster, m: Member) -> int:
    r = c.post(m, "/v1/distributions", {"estimated_revenue": 5_000_000_000})
    assert r.status_code == 201, r.text
    return int(r.json()["distribution_id"])


def _block_status(c: Cluster) -> str:
    ((status,),) = c.sql("SELECT status FROM blocks")
    return str(status)


def _spends(c: Cluster, block_id: int) -> list[tuple[str, str, bytes]]:
    return [(str(r[0]), str(r[1]), bytes(r[2])) for r in c.sql(
        "SELECT role, status, raw FROM settlement_txs WHERE block_id = "
        f"{block_id} AND role IN ('cooperative', 'fallback') ORDER BY id")]


def _paid_once(c: Cluster, fe: Member, block_id: int, role: str) -> None:
    """The block is paid exactly once: one spend of its coinbase output, confirmed on chain,
    whose outputs are the ones rebuilt here from the distribution; every ledger line once;
    each miner's owed balance is the sum of its lines."""
    assert c.regtest is not None
    assert _block_status(c) == "paid"
    ((txid, vout, did, revenue),) = c.sql(
        "SELECT s.funding_txid, s.funding_vout, b.distribution_id, b.revenue FROM settlements s "
        f"JOIN blocks b ON b.id = s.block_id WHERE s.block_id = {block_id}")
    funding = OutPoint(bytes(txid), int(vout))
    assert c.regtest.call("gettxout", display_hex(funding.txid), funding.n) is None  # spent
    ((spend_role, spend_status, raw),) = _spends(c, block_id)  # one spend, never a second
    assert (spend_role, spend_status) == (role, "confirmed")
    tx = Tx.parse(raw)
    assert [i.prevout for i in tx.inputs] == [funding]
    ((in_block,),) = c.sql("SELECT confirmed_block FROM settlement_txs WHERE role = "
                           f"'{role}' AND block_id = {block_id}")
    info = c.regtest.call("getrawtransaction", tx.txid_hex, True, display_hex(bytes(in_block)))
    assert info["in_active_chain"] is True and info["confirmations"] >= 1
    # The payout outputs, rebuilt from the stored distribution and the block's revenue.
    settings = Settings(database_url=c.url, network="regtest",
                        pool={"payout_script": POOL_SCRIPT},
                        distribution={"mode": "musig2"}, settlement={"musig2": MUSIG2})
    svc = PoolService(settings, migrate=False, accounting=False)
    try:
        dist = svc.distribution(int(did)).distribution
    finally:
        svc.engine.dispose()
    m2 = mode_from_settings(settings).musig2
    assert m2 is not None
    out = m2.build(dist, int(revenue))
    want: tuple[TxOut, ...] = (out.payout_tx.outputs if role == "cooperative"
                               else build_fallback_spend(out, funding).outputs)
    assert tx.outputs == want
    for n, o in enumerate(tx.outputs):
        utxo = c.regtest.call("gettxout", tx.txid_hex, n)
        assert utxo is not None and round(float(utxo["value"]) * 100_000_000) == o.value
    paid_scripts = {o.script for o in tx.outputs}
    assert sum(1 for i in range(len(MINERS)) if bytes.fromhex("5120") + bytes([i + 1]) * 32
               in paid_scripts) == len(MINERS)  # every miner of the window is paid
    ((n_lines, distinct),) = c.sql(
        "SELECT COUNT(*), COUNT(DISTINCT (miner_id, reason, amount, block_id)) "
        "FROM ledger_entries")
    assert n_lines == distinct  # no ledger line written twice
    sums = {str(a): int(s) for a, s in c.sql(
        "SELECT m.account, COALESCE(SUM(e.amount), 0) FROM miners m "
        "LEFT JOIN ledger_entries e ON e.miner_id = m.id GROUP BY m.account")}
    for a in MINERS:
        r = c.get(fe, f"/v1/miners/{a}/balance")
        assert r.status_code == 200 and r.json()["owed_sats"] == sums[a], (a, r.text)
    ((sessions,),) = c.sql("SELECT COUNT(*) FROM musig_sessions")
    assert sessions == 1  # one session, resumed by each leader, never opened again
    ((rounds,),) = c.sql("SELECT COUNT(*) FROM accounting_events WHERE kind = 'round'")
    assert rounds == 1
    ((queued, recorded),) = c.sql("SELECT COUNT(*), COUNT(recorded_at) FROM found_blocks")
    assert queued == recorded == 1


def test_kill_the_leader_at_the_musig2_signing_and_broadcast_stages(cluster: Cluster) -> None:
    c = cluster
    fe, fe2, leaders = _start(c, leaders=4)  # three kills: a standby left each time
    block_id = _find_block(c, fe, _publish(c, fe2))
    _mine(c, first_mature_tip(102) - _tip(c))
    wait_until(lambda: c.get(fe2, f"/v1/musig2/sessions/block-{block_id}").status_code == 200,
               WAIT_S, "the leader opened the signing session at maturity")
    signers = Signers(c, block_id)
    first = signers.view(fe)
    assert first["state"] == "collecting-nonces" and first["missing_nonces"] == [0, 1, 2]

    # Signing, round 1: two of three nonces in (one to each frontend), then the leader dies.
    signers.nonces(fe, [0])
    view = signers.nonces(fe2, [1])
    assert view["missing_nonces"] == [2]
    took = [_kill_leader(c, leaders, "signing (nonces partly posted)")]
    view = signers.view(fe2)
    assert view["missing_nonces"] == [2]  # kept in the store across the takeover
    assert (view["sighash"], view["pubkeys"]) == (first["sighash"], first["pubkeys"])
    view = signers.nonces(fe2, [2])
    assert view["state"] == "collecting-partial-sigs" and view["aggnonce"]
    aggnonce = view["aggnonce"]

    # Signing, round 2: one partial signature in, then the leader dies.
    view = signers.partials(fe, [0])
    assert view["missing_partial_sigs"] == [1, 2]
    took.append(_kill_leader(c, leaders, "signing (partial signatures partly posted)"))
    view = signers.view(fe)
    assert view["missing_partial_sigs"] == [1, 2] and view["aggnonce"] == aggnonce
    view = signers.partials(fe2, [1, 2])
    assert view["state"] == "complete" and view["signature"]

    # Broadcast: the leader sends the cooperative spend; it dies before the spend confirms.
    wait_until(lambda: [s for s in _spends(c, block_id) if s[1] == "broadcast"], WAIT_S,
               "the cooperative spend broadcast")
    took.append(_kill_leader(c, leaders, "broadcast"))
    ((_, _, raw),) = _spends(c, block_id)
    assert c.regtest is not None
    assert Tx.parse(raw).txid_hex in c.regtest.call("getrawmempool")
    _mine(c, 1)
    wait_until(lambda: _block_status(c) == "paid", WAIT_S, "paid by the fourth leader")
    assert all(t < TAKEOVER_S for t in took), took
    _paid_once(c, fe2, block_id, "cooperative")
    assert "elected leader (epoch 4" in _leader(c, leaders).text()


def _problem(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return dict(r.json())


def test_settlement_actions_forwarded_from_frontends(cluster: Cluster) -> None:
    c = cluster
    fe, fe2, leaders = _start(c, leaders=2, fe2_timeout="8")
    block_id = _find_block(c, fe, _publish(c, fe))
    path = f"/v1/settlements/{block_id}"

    # Too early: the leader's runner refuses, the frontend renders its problem unchanged.
    tip = _tip(c)
    p = _problem(c.post(fe, f"{path}/broadcast", None))
    assert (p["status"], p["code"], p["mature_at_tip"], p["tip"]) == (
        409, "not-mature", first_mature_tip(102), tip)
    assert p["detail"] == (f"block {block_id}'s coinbase can be spent from tip "
                           f"{first_mature_tip(102)} on (100 confirmations); the tip is {tip}")
    assert p["instance"] == f"{path}/broadcast"
    # An unknown block is the frontend's own 404, as on a single process.
    assert _problem(c.post(fe2, "/v1/settlements/999/fallback", None))["code"] == "unknown-block"

    _mine(c, first_mature_tip(102) - _tip(c))
    wait_until(lambda: c.get(fe, f"/v1/musig2/sessions/block-{block_id}").status_code == 200,
               WAIT_S, "the signing session opened at maturity")
    valid_from = 102 + FALLBACK_DELAY
    p = _problem(c.post(fe, f"{path}/fallback", None))
    assert (p["status"], p["code"], p["valid_from_height"]) == (409, "fallback-locked",
                                                                  valid_from)
    _mine(c, valid_from - 1 - _tip(c))  # the next block may hold the fallback

    # No leader answers (stopped, its lock still held: no takeover): 503 after fe2's 8 s, the
    # request closed; resumed, the leader does not act on it behind the caller's back.
    leader = _leader(c, leaders)
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = c.post(fe2, f"{path}/fallback", None)
        assert time.monotonic() - t0 >= 8.0
        p = _problem(r)
        assert (p["status"], p["code"]) == (503, "no-leader")
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    # A later forwarded action is answered only after the closed one was passed over (the
    # leader answers in id order): then the session must still be open.
    r = c.post(fe, f"{path}/broadcast", None)
    assert r.status_code == 200, r.text
    assert r.json()["settlement"]["signing_session"] == f"block-{block_id}"
    session = c.get(fe, f"/v1/musig2/sessions/block-{block_id}").json()
    assert session["state"] == "collecting-nonces"
    assert _spends(c, block_id) == []

    # The same fallback on both frontends at once: one request, acted on once, one answer.
    before = int(c.sql("SELECT COUNT(*) FROM leader_requests WHERE kind = 'fallback'")[0][0])
    answers: dict[str, httpx.Response] = {}
    go = threading.Barrier(2)

    def ask(name: str, m: Member) -> None:
        go.wait()
        answers[name] = c.post(m, f"{path}/fallback", None)

    threads = [threading.Thread(target=ask, args=(n, m)) for n, m in (("fe", fe), ("fe2", fe2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert answers["fe"].status_code == answers["fe2"].status_code == 200, (
        answers["fe"].text, answers["fe2"].text)
    assert answers["fe"].json() == answers["fe2"].json()
    ((after,),) = c.sql("SELECT COUNT(*) FROM leader_requests WHERE kind = 'fallback'")
    assert after == before + 1
    body = answers["fe"].json()
    assert [x["result"] for x in body["results"]] == ["accepted"]
    assert body["settlement"]["phase"] == "broadcasting"
    assert [(t["role"], t["status"]) for t in body["settlement"]["txs"]] == [
        ("fallback", "broadcast")]
    assert "signing-failed" in [e["kind"] for e in body["events"]]
    assert c.get(fe, f"/v1/musig2/sessions/block-{block_id}").json()["state"] == "failed"
    ((_, _, raw),) = _spends(c, block_id)
    assert c.regtest is not None
    assert Tx.parse(raw).txid_hex in c.regtest.call("getrawmempool")
    _mine(c, 1)
    wait_until(lambda: _block_status(c) == "paid", WAIT_S, "paid through the fallback")
    _paid_once(c, fe, block_id, "fallback")
