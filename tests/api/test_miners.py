"""Miner endpoints: challenges, BIP-322 registration, rotation (and who may rotate), reads."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payouts.accounting.shares import ShareBatch
from payouts.crypto import bip322, schnorr
from payouts.service import PoolService
from payouts.store import repositories as repo
from tests.api.conftest import assert_problem, p2wpkh_address, register

ALICE = bytes.fromhex("01" * 32)
BOB = bytes.fromhex("02" * 32)
MALLORY = bytes.fromhex("03" * 32)
ALICE_NEW = bytes.fromhex("04" * 32)


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


def test_register_with_bip322_and_read_back(client: TestClient, service: PoolService) -> None:
    out = register(client, "alice", ALICE)
    assert out["address"] == p2wpkh_address(ALICE) and out["musig_pubkey"] is None
    r = client.get("/v1/miners/alice")
    assert r.status_code == 200 and r.json()["account"] == "alice"
    r = client.get("/v1/miners/alice/balance")
    assert r.json() == {"account": "alice", "address": p2wpkh_address(ALICE), "owed_sats": 0}
    assert repo.get_miner_by_account(service.engine, "alice") is not None


def test_challenge_message_binds_everything(client: TestClient) -> None:
    addr = p2wpkh_address(ALICE)
    ch = client.post("/v1/miners/challenges", json={"account": "alice", "address": addr}).json()
    msg = ch["message"]
    for part in ("network: regtest", "account: alice", f"address: {addr}", ch["nonce"]):
        assert part in msg


def test_wrong_network_address_is_422(client: TestClient) -> None:
    r = client.post("/v1/miners/challenges", json={
        "account": "alice", "address": "bc1q9vza2e8x573nczrlzms0wvx3gsqjx7vavgkx0l"})
    assert_problem(r, 422, "address-wrong-network")
    r = client.post("/v1/miners/challenges", json={"account": "alice", "address": "nonsense"})
    assert_problem(r, 422, "invalid-address")


def test_bad_signature_writes_nothing(client: TestClient, service: PoolService) -> None:
    addr = p2wpkh_address(ALICE)
    ch = client.post("/v1/miners/challenges", json={"account": "alice", "address": addr}).json()
    # Signed by another key (Mallory tries to register Alice's address).
    sig = bip322.sign_simple(MALLORY, p2wpkh_address(MALLORY), ch["message"], "regtest")
    r = client.post("/v1/miners", json={"account": "alice", "address": addr,
                                        "nonce": ch["nonce"], "signature": sig})
    assert_problem(r, 422, "bip322-invalid")
    r = client.post("/v1/miners", json={"account": "alice", "address": addr,
                                        "nonce": ch["nonce"], "signature": "smp!!!"})
    assert_problem(r, 422, "bip322-malformed")
    assert _count(service.engine, "miners") == 0
    # The challenge is still usable by the real owner.
    good = bip322.sign_simple(ALICE, addr, ch["message"], "regtest")
    r = client.post("/v1/miners", json={"account": "alice", "address": addr,
                                        "nonce": ch["nonce"], "signature": good})
    assert r.status_code == 201
    # ...once only.
    r = client.post("/v1/miners", json={"account": "alice", "address": addr,
                                        "nonce": ch["nonce"], "signature": good})
    assert_problem(r, 409, "challenge-used")


def test_challenge_rules(client: TestClient, service: PoolService) -> None:
    addr = p2wpkh_address(ALICE)
    r = client.post("/v1/miners", json={"account": "alice", "address": addr,
                                        "nonce": "0" * 32, "signature": "smpAA=="})
    assert_problem(r, 404, "unknown-challenge")
    ch = client.post("/v1/miners/challenges", json={"account": "alice", "address": addr}).json()
    sig = bip322.sign_simple(ALICE, addr, ch["message"], "regtest")
    r = client.post("/v1/miners", json={"account": "bob", "address": addr,
                                        "nonce": ch["nonce"], "signature": sig})
    assert_problem(r, 422, "challenge-mismatch")
    with service.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE registration_challenges SET expires_at = '2000-01-01'")
    r = client.post("/v1/miners", json={"account": "alice", "address": addr,
                                        "nonce": ch["nonce"], "signature": sig})
    assert_problem(r, 422, "challenge-expired")
    register(client, "alice", ALICE)
    r = client.post("/v1/miners/challenges", json={"account": "alice", "address": addr})
    assert_problem(r, 409, "duplicate-key")


def test_musig_key_proof(client: TestClient) -> None:
    from api.routers.miners import musig_proof_message
    from payouts.crypto.musig2 import individual_pubkey

    addr = p2wpkh_address(ALICE)
    musig_sk = hashlib.sha256(b"musig").digest()
    pk = individual_pubkey(musig_sk)
    ch = client.post("/v1/miners/challenges", json={"account": "alice", "address": addr}).json()
    sig = bip322.sign_simple(ALICE, addr, ch["message"], "regtest")
    base = {"account": "alice", "address": addr, "nonce": ch["nonce"], "signature": sig,
            "musig_pubkey": pk.hex()}
    wrong = schnorr.sign(musig_proof_message("alice", ch["nonce"], pk.hex()), MALLORY)
    assert_problem(client.post("/v1/miners", json={**base, "musig_proof": wrong.hex()}), 422,
                   "invalid-musig-proof")
    assert_problem(client.post("/v1/miners", json=base), 422, "musig-proof-required")
    proof = schnorr.sign(musig_proof_message("alice", ch["nonce"], pk.hex()), musig_sk)
    r = client.post("/v1/miners", json={**base, "musig_proof": proof.hex()})
    assert r.status_code == 201 and r.json()["musig_pubkey"] == pk.hex()


def _rotation(client: TestClient, account: str, new_key: bytes) -> dict[str, str]:
    r = client.post("/v1/miners/challenges", json={
        "account": account, "address": p2wpkh_address(new_key), "purpose": "rotate"})
    assert r.status_code == 201, r.text
    out: dict[str, str] = r.json()
    return out


def test_rotation_needs_new_and_current_address(client: TestClient,
                                                service: PoolService) -> None:
    register(client, "alice", ALICE)
    register(client, "bob", BOB)
    ch = _rotation(client, "alice", ALICE_NEW)
    new_addr = p2wpkh_address(ALICE_NEW)
    assert f"current address: {p2wpkh_address(ALICE)}" in ch["message"]
    new_sig = bip322.sign_simple(ALICE_NEW, new_addr, ch["message"], "regtest")
    cur_sig = bip322.sign_simple(ALICE, p2wpkh_address(ALICE), ch["message"], "regtest")
    url = "/v1/miners/alice/address"
    # Another miner's account: Bob's valid signature by Bob's address does not authorise Alice.
    bob_sig = bip322.sign_simple(BOB, p2wpkh_address(BOB), ch["message"], "regtest")
    r = client.post(url, json={"nonce": ch["nonce"], "new_signature": new_sig,
                               "current_signature": bob_sig})
    assert_problem(r, 403, "account-auth-failed")
    # An attacker with only the new address's key (their own) cannot redirect Alice's payouts.
    m_ch = _rotation(client, "alice", MALLORY)
    m_sig = bip322.sign_simple(MALLORY, p2wpkh_address(MALLORY), m_ch["message"], "regtest")
    r = client.post(url, json={"nonce": m_ch["nonce"], "new_signature": m_sig,
                               "current_signature": m_sig})
    assert_problem(r, 403, "account-auth-failed")
    # The current key alone is not enough either: the new address must sign.
    r = client.post(url, json={"nonce": ch["nonce"], "new_signature": cur_sig,
                               "current_signature": cur_sig})
    assert_problem(r, 422, "bip322-invalid")
    # A challenge for Alice used on Bob's account.
    r = client.post("/v1/miners/bob/address", json={
        "nonce": ch["nonce"], "new_signature": new_sig, "current_signature": cur_sig})
    assert_problem(r, 422, "challenge-mismatch")
    assert client.get("/v1/miners/alice").json()["address"] == p2wpkh_address(ALICE)
    assert _count(service.engine, "miner_address_changes") == 0
    r = client.post(url, json={"nonce": ch["nonce"], "new_signature": new_sig,
                               "current_signature": cur_sig})
    assert r.status_code == 200, r.text
    assert r.json()["address"] == new_addr
    assert _count(service.engine, "miner_address_changes") == 1
    # Replay of the same rotation is refused.
    r = client.post(url, json={"nonce": ch["nonce"], "new_signature": new_sig,
                               "current_signature": cur_sig})
    assert_problem(r, 409, "challenge-used")


def test_rotation_of_unknown_account(client: TestClient) -> None:
    r = client.post("/v1/miners/challenges", json={
        "account": "ghost", "address": p2wpkh_address(ALICE), "purpose": "rotate"})
    assert_problem(r, 404, "unknown-miner")
    r = client.post("/v1/miners/ghost/address", json={
        "nonce": "0" * 32, "new_signature": "smpAA==", "current_signature": "smpAA=="})
    assert_problem(r, 404, "unknown-miner")


def test_reads_of_unknown_account_are_404(client: TestClient) -> None:
    for tail in ("", "/balance", "/ledger", "/shares", "/payouts"):
        assert_problem(client.get(f"/v1/miners/nobody{tail}"), 404, "unknown-miner")


def test_shares_hashrate_ledger_and_payouts(client: TestClient, service: PoolService) -> None:
    a = register(client, "alice", ALICE)
    register(client, "bob", BOB)
    ids = repo.miner_ids(service.engine, ["alice", "bob"])
    n = 10
    service.accountant.set_network_difficulty(10**6)  # TIDES window k·D covers every share
    service.ingest(ShareBatch(
        key=[f"k{i}" for i in range(n)],
        miner_id=np.array([ids["alice"]] * 6 + [ids["bob"]] * 4, dtype=np.int64),
        worker=["w"] * n, difficulty=np.full(n, 1000, dtype=np.int64), job_id=["j"] * n,
        revenue=np.full(n, 312_500_000, dtype=np.int64),
        time_ms=np.arange(n, dtype=np.int64) * 1000 + 1_700_000_000_000,
    ))
    r = client.get("/v1/miners/alice/shares").json()
    assert r["miner_shares"] == 6 and r["window_shares"] == 10
    assert r["miner_difficulty"] == "6000" and r["window_ms"] == 9000
    assert r["hashrate_hs"] == 6000 * 2**32 // 9
    assert client.get("/v1/miners/bob/shares").json()["miner_shares"] == 4
    fitted = service.publish_distribution(312_500_000)
    service.record_block(distribution_id=fitted.distribution.distribution_id,
                         revenue=312_500_000, block_hash=bytes(range(32)), height=101)
    p = client.get("/v1/miners/alice/payouts").json()
    assert len(p["blocks"]) == 1 and p["blocks"][0]["paid_sats"] > 0
    led = client.get("/v1/miners/alice/ledger").json()
    assert led["owed_sats"] == sum(e["amount"] for e in led["entries"])
    assert a["account"] == "alice"


def test_full_and_p2tr_registration(client: TestClient) -> None:
    from payouts.crypto.schnorr import xonly_pubkey
    from payouts.crypto.taproot import tweak_pubkey
    from payouts.tx.address import script_to_address

    addr = script_to_address(b"\x51\x20" + tweak_pubkey(xonly_pubkey(ALICE))[0], "regtest")
    ch = client.post("/v1/miners/challenges", json={"account": "tr", "address": addr}).json()
    simple = bip322.sign_simple(ALICE, addr, ch["message"], "regtest")
    stack = bip322.decode_witness(base64.b64decode(simple[3:]))
    spend = bip322.to_spend(bip322.decode_address_script(addr), ch["message"])
    full = "ful" + base64.b64encode(bip322.to_sign(spend, stack).serialize()).decode()
    r = client.post("/v1/miners", json={"account": "tr", "address": addr,
                                        "nonce": ch["nonce"], "signature": full})
    assert r.status_code == 201, r.text
