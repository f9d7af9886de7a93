"""A committee member's side of a MuSig2 signing session over the pool's API (BIP-327), for
``payouts musig2 sign``: the miner signs with its own key, on its own machine, without code.

1. ``GET /v1/musig2/sessions/{id}``: the sighash, the committee keys (signer index = position),
   the taproot tweak and the output key. The signer finds its index from its public key,
   rebuilds the aggregate key with the tweak and refuses to go on unless it is the output key the
   session announces (it signs for that output, nothing else).
2. Round 1: a fresh nonce (BIP-327 NonceGen with the key, the aggregate and the message), posted
   with ``auth`` = its BIP-340 signature over the nonce auth message, so nobody else can take
   its slot. The secret nonce stays in memory and is used once.
3. It waits (polling) until every nonce is in and the session shows the aggregate nonce, then
   round 2: its partial signature (BIP-327 Sign), which the server verifies at once.
4. It waits for the result: the final signature, or the session's failure and who was blamed.

What it cannot check: that the sighash is of a transaction that pays what the miner expects;
``payouts musig2 output`` (offline) computes that transaction from the distribution.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from payouts.crypto import musig2 as m
from payouts.crypto import schnorr
from payouts.errors import ValidationError
from payouts.settlement.musig2.session import nonce_auth_message


class SignerError(ValidationError):
    code = "musig2-signer"


@dataclass(frozen=True, slots=True)
class SignResult:
    session: dict[str, Any]
    signer_index: int


def _checked(r: Any, what: str) -> dict[str, Any]:
    if r.status_code >= 400:
        try:
            body = r.json()
            why = f"{body.get('code')}: {body.get('detail')}"
        except ValueError:
            why = r.text[:200]
        raise SignerError(f"{what}: HTTP {r.status_code} {why}")
    out: dict[str, Any] = r.json()
    return out


def sign_session(client: Any, session_id: str, seckey: bytes, *,
                 poll: float = 1.0, timeout: float = 600.0,
                 say: Callable[[str], None] = lambda _: None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> SignResult:
    """Take part in ``session_id`` with ``seckey`` through ``client`` (an ``httpx.Client`` on
    the pool's API); returns the session as it ends (complete or failed)."""
    from coincurve import PrivateKey

    url = f"/v1/musig2/sessions/{session_id}"
    view = _checked(client.get(url), "reading the session")
    pubkey = PrivateKey(seckey).public_key.format(compressed=True)
    pubkeys = [bytes.fromhex(p) for p in view["pubkeys"]]
    if pubkey not in pubkeys:
        raise SignerError(f"this key ({pubkey.hex()}) is not in the session's committee")
    index = pubkeys.index(pubkey)
    keyagg = m.key_agg(pubkeys)
    root = view.get("taproot_merkle_root")
    if root is not None:
        keyagg = keyagg.taproot_tweak(bytes.fromhex(root))
    if keyagg.xonly_pubkey.hex() != view["output_key"]:
        raise SignerError("the committee's key with the session's tweak is not the output key "
                          "the session announces: refusing to sign")
    msg = bytes.fromhex(view["sighash"])
    say(f"session {session_id}: signer {index} of {len(pubkeys)}, sighash {msg.hex()}, "
        f"output key {view['output_key']}")
    if index in view["missing_nonces"]:
        secnonce, pubnonce = m.nonce_gen(seckey, pubkey, keyagg, msg)
        auth = schnorr.sign(nonce_auth_message(session_id, index, pubnonce), seckey)
        _checked(client.post(f"{url}/nonces", json={"signer_index": index,
                                                     "pubnonce": pubnonce.hex(),
                                                     "auth": auth.hex()}), "posting the nonce")
        say("nonce posted; waiting for the other signers' nonces")
    else:
        raise SignerError(f"signer {index}'s nonce is in already (a nonce is used once: this "
                          "signer cannot sign this session again)")
    deadline = clock() + timeout
    while True:
        view = _checked(client.get(url), "reading the session")
        if view["failure"] or view["aggnonce"]:
            break
        if clock() > deadline:
            raise SignerError("timed out waiting for the other signers' nonces")
        sleep(poll)
    if view["failure"]:
        return SignResult(view, index)
    ctx = m.SessionContext(bytes.fromhex(view["aggnonce"]), keyagg, msg)
    psig = m.partial_sign(secnonce, seckey, ctx)
    _checked(client.post(f"{url}/partial-signatures",
                         json={"signer_index": index, "psig": psig.hex()}),
             "posting the partial signature")
    say("partial signature posted; waiting for the others")
    while True:
        view = _checked(client.get(url), "reading the session")
        if view["signature"] or view["failure"]:
            return SignResult(view, index)
        if clock() > deadline:
            raise SignerError("timed out waiting for the other partial signatures")
        sleep(poll)


__all__ = ["SignResult", "SignerError", "sign_session"]
