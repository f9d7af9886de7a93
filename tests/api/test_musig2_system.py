"""MuSig2 signing over the API (deadlines, blame, signer auth) and the system endpoints:
metrics, health, OpenAPI, rate limits, body limit, access log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import metrics
from api.app import create_app
from api.routers.musig2 import nonce_auth_message
from payouts.crypto import musig2 as m
from payouts.crypto import schnorr
from payouts.service import PoolService
from tests.api.conftest import Clock, assert_problem, bearer

SKS = [bytes([i + 1]) * 32 for i in range(3)]
PKS = [m.individual_pubkey(sk) for sk in SKS]
MSG = bytes(range(32))


def _create(client: TestClient, token: Callable[..., str], **over: Any) -> dict[str, Any]:
    body = {"sighash": MSG.hex(), "pubkeys": [p.hex() for p in PKS], "nonce_timeout_s": 30,
            "sig_timeout_s": 30, **over}
    r = client.post("/v1/musig2/sessions", json=body, headers=bearer(token("settlements:write")))
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _nonce_body(sid: str, i: int, pubnonce: bytes, key: bytes | None = None) -> dict[str, Any]:
    auth = schnorr.sign(nonce_auth_message(sid, i, pubnonce), key or SKS[i])
    return {"signer_index": i, "pubnonce": pubnonce.hex(), "auth": auth.hex()}


def test_signing_round_trip(client: TestClient, token: Callable[..., str]) -> None:
    s = _create(client, token, partial_sig_check="on-arrival")
    sid = s["id"]
    assert s["partial_sig_check"] == "on-arrival"
    assert s["state"] == "collecting-nonces" and s["missing_nonces"] == [0, 1, 2]
    ctx = m.key_agg(PKS)
    nonces = [m.nonce_gen(sk, pk, ctx, MSG) for sk, pk in zip(SKS, PKS, strict=True)]
    url_n = f"/v1/musig2/sessions/{sid}/nonces"
    for i, (_, pn) in enumerate(nonces):
        r = client.post(url_n, json=_nonce_body(sid, i, pn))
        assert r.status_code == 200, r.text
        if i == 0:
            # A retransmission is idempotent; another nonce for a filled slot is a conflict.
            assert client.post(url_n, json=_nonce_body(sid, 0, pn)).status_code == 200
            assert_problem(client.post(url_n, json=_nonce_body(sid, 0, nonces[1][1])), 409,
                           "duplicate-nonce")
    s = client.get(f"/v1/musig2/sessions/{sid}").json()
    assert s["state"] == "collecting-partial-sigs" and s["aggnonce"]
    session = m.SessionContext(bytes.fromhex(s["aggnonce"]), ctx, MSG)
    psigs = [m.partial_sign(sn, sk, session) for (sn, _), sk in zip(nonces, SKS, strict=True)]
    url = f"/v1/musig2/sessions/{sid}/partial-signatures"
    bad = client.post(url, json={"signer_index": 0, "psig": psigs[1].hex()})
    body = assert_problem(bad, 422, "invalid-partial-signature")
    assert body["signer_index"] == 0
    for i, ps in enumerate(psigs):
        assert client.post(url, json={"signer_index": i, "psig": ps.hex()}).status_code == 200
    s = client.get(f"/v1/musig2/sessions/{sid}").json()
    assert s["state"] == "complete"
    assert schnorr.verify(bytes.fromhex(s["signature"]), MSG, bytes.fromhex(s["output_key"]))


def test_default_checks_partials_on_the_aggregate_with_the_same_blame(
        client: TestClient, token: Callable[..., str], clock: Clock) -> None:
    """The API's default (issue #17): a bad partial signature is accepted on its POST and
    refused when the set is complete (its signer is missing again and may still deliver);
    one never corrected is blamed at the deadline exactly as on-arrival blames it."""
    ctx = m.key_agg(PKS)
    for corrected in (True, False):
        s = _create(client, token)
        sid = s["id"]
        assert s["partial_sig_check"] == "on-aggregate"
        nonces = [m.nonce_gen(sk, pk, ctx, MSG) for sk, pk in zip(SKS, PKS, strict=True)]
        for i, (_, pn) in enumerate(nonces):
            assert client.post(f"/v1/musig2/sessions/{sid}/nonces",
                               json=_nonce_body(sid, i, pn)).status_code == 200
        aggnonce = bytes.fromhex(client.get(f"/v1/musig2/sessions/{sid}").json()["aggnonce"])
        session = m.SessionContext(aggnonce, ctx, MSG)
        psigs = [m.partial_sign(sn, sk, session) for (sn, _), sk in zip(nonces, SKS, strict=True)]
        url = f"/v1/musig2/sessions/{sid}/partial-signatures"
        # Signer 0 posts signer 1's partial: accepted now (only the range is checked) ...
        assert client.post(url, json={"signer_index": 0, "psig": psigs[1].hex()}
                           ).status_code == 200
        for i in (1, 2):  # ... and the post that completes the set gets no error for it
            assert client.post(url, json={"signer_index": i, "psig": psigs[i].hex()}
                               ).status_code == 200
        s = client.get(f"/v1/musig2/sessions/{sid}").json()
        assert s["state"] == "collecting-partial-sigs" and s["missing_partial_sigs"] == [0]
        if corrected:
            assert client.post(url, json={"signer_index": 0, "psig": psigs[0].hex()}
                               ).status_code == 200
            s = client.get(f"/v1/musig2/sessions/{sid}").json()
            assert s["state"] == "complete"
            assert schnorr.verify(bytes.fromhex(s["signature"]), MSG,
                                  bytes.fromhex(s["output_key"]))
        else:
            clock.t += 61  # past the signature deadline
            s = client.get(f"/v1/musig2/sessions/{sid}").json()
            assert s["state"] == "failed" and s["failure"] == "signature-deadline"
            assert s["failed_signers"] == {"0": "invalid-partial-signature"}


def test_nonce_needs_the_signers_key(client: TestClient, token: Callable[..., str]) -> None:
    sid = _create(client, token)["id"]
    _, pn = m.nonce_gen(SKS[0], PKS[0])
    # Signer 1 (another committee member) cannot occupy signer 0's slot.
    r = client.post(f"/v1/musig2/sessions/{sid}/nonces", json=_nonce_body(sid, 0, pn, SKS[1]))
    assert_problem(r, 403, "signer-auth-failed")
    r = client.post(f"/v1/musig2/sessions/{sid}/nonces", json=_nonce_body(sid, 7, pn, SKS[1]))
    assert_problem(r, 404, "unknown-signer")
    assert client.get(f"/v1/musig2/sessions/{sid}").json()["missing_nonces"] == [0, 1, 2]


def test_deadlines_and_errors(client: TestClient, token: Callable[..., str],
                              clock: Clock) -> None:
    sid = _create(client, token)["id"]
    r = client.post(f"/v1/musig2/sessions/{sid}/partial-signatures",
                    json={"signer_index": 0, "psig": "00" * 32})
    assert_problem(r, 409, "wrong-state")
    r = client.post(f"/v1/musig2/sessions/{sid}/nonces",
                    json=_nonce_body(sid, 0, b"\x02" + b"\x00" * 65))
    assert_problem(r, 422, "invalid-nonce")
    _, pn = m.nonce_gen(SKS[1], PKS[1])
    assert client.post(f"/v1/musig2/sessions/{sid}/nonces",
                       json=_nonce_body(sid, 1, pn)).status_code == 200
    clock.t += 31  # past the nonce deadline
    _, pn2 = m.nonce_gen(SKS[2], PKS[2])
    r = client.post(f"/v1/musig2/sessions/{sid}/nonces", json=_nonce_body(sid, 2, pn2))
    assert_problem(r, 409, "deadline-passed")
    s = client.get(f"/v1/musig2/sessions/{sid}").json()
    assert s["state"] == "failed" and s["failure"] == "nonce-deadline"
    assert s["failed_signers"] == {"0": "invalid-nonce", "2": "no-nonce"}
    assert_problem(client.get("/v1/musig2/sessions/nope"), 404, "unknown-session")
    r = client.post("/v1/musig2/sessions", headers=bearer(token("settlements:write")),
                    json={"sighash": MSG.hex(), "pubkeys": [PKS[0].hex(), PKS[0].hex()]})
    assert_problem(r, 422, "duplicate-pubkey")


def test_metrics_health_and_openapi(client: TestClient, token: Callable[..., str]) -> None:
    metrics.record_declaration(False, "payout-mismatch")
    metrics.record_declaration(True)
    text = client.get("/metrics").text
    for name in ("payouts_shares_ingested_total", "payouts_window_shares",
                 "payouts_window_total_weight", "payouts_distributions_published_total",
                 'payouts_declarations_total{reason="payout-mismatch",result="rejected"}',
                 'payouts_settlements{state="found"}', "payouts_http_requests_total"):
        assert name in text, name
    assert client.get("/v1/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert "/v1/shares" in spec["paths"] and "/v1/miners" in spec["paths"]
    assert client.get("/docs").status_code == 200
    assert_problem(client.get("/v1/nothing-here"), 404, "not-found")
    assert_problem(client.delete("/v1/window"), 405, "method-not-allowed")


def test_rate_limit_429_with_retry_after(service: PoolService) -> None:
    app = create_app(service, rate_limit=1.0, rate_burst=3)
    with TestClient(app) as c:
        codes = [c.get("/v1/miners/nobody").status_code for _ in range(5)]
        assert codes[:3] == [404, 404, 404] and codes[3:] == [429, 429]
        r = c.get("/v1/miners/nobody")
        assert_problem(r, 429, "rate-limited")
        assert int(r.headers["retry-after"]) >= 1
        # Operator endpoints are not limited per client (they carry a token).
        assert c.get("/v1/window").status_code == 401


def test_body_limit_413(service: PoolService, token: Callable[..., str]) -> None:
    app = create_app(service, rate_limit=None, max_body_bytes=1000)
    with TestClient(app) as c:
        r = c.post("/v1/shares", content=b"x" * 5000, headers={
            **bearer(token("shares:write")), "content-type": "application/json"})
        assert_problem(r, 413, "request-too-large")

        def chunks() -> Any:
            yield b"{" + b" " * 800
            yield b" " * 800 + b"}"

        r = c.post("/v1/shares", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(r, 413, "request-too-large")


def test_access_log_one_json_line(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="payouts.api.access"):
        client.get("/v1/miners/nobody")
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "payouts.api.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["path"] == "/v1/miners/nobody"
    assert line["status"] == 404 and line["duration_ms"] >= 0 and line["client"]
