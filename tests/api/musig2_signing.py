"""A MuSig2 committee signing a settlement runner's session through the API, and the check that
a settlement tx's outputs are in the kernel's UTXO set."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from api.routers.musig2 import nonce_auth_message
from payouts.crypto import musig2 as m
from payouts.crypto import schnorr
from payouts.node.kernel import KernelNode
from payouts.settlement.lifecycle_store import TxRow
from payouts.settlement.musig2.session import SigningSession
from payouts.tx.transaction import Tx
from tests.lifecycle.helpers import run

Get = Callable[[str], Any]
Post = Callable[[str, dict[str, Any]], Any]


def sign_session(get: Get, post: Post, sid: str, session: SigningSession,
                 keys: Mapping[bytes, bytes]) -> dict[str, Any]:
    """Round 1 (authenticated nonces) and round 2 (partial signatures) by every member, each
    reading what it needs (keys, aggregate nonce) from ``GET /v1/musig2/sessions/{sid}``;
    ``session`` gives the KeyAgg context with the taproot tweak (a signer rebuilds it from the
    output). Returns the session as the API shows it at the end."""
    url = f"/v1/musig2/sessions/{sid}"
    view = get(url).json()
    assert view["sighash"] == session.msg.hex()
    pubkeys = [bytes.fromhex(p) for p in view["pubkeys"]]
    secnonces = {}
    for i, pk in enumerate(pubkeys):
        sn, pn = m.nonce_gen(keys[pk], pk, session.keyagg, session.msg)
        secnonces[i] = sn
        auth = schnorr.sign(nonce_auth_message(sid, i, pn), keys[pk])
        r = post(f"{url}/nonces", {"signer_index": i, "pubnonce": pn.hex(), "auth": auth.hex()})
        assert r.status_code == 200, r.text
    agg = get(url).json()["aggnonce"]
    ctx = m.SessionContext(bytes.fromhex(agg), session.keyagg, session.msg)
    for i, pk in enumerate(pubkeys):
        psig = m.partial_sign(secnonces[i], keys[pk], ctx)
        r = post(f"{url}/partial-signatures", {"signer_index": i, "psig": psig.hex()})
        assert r.status_code == 200, r.text
    out: dict[str, Any] = get(url).json()
    return out


def assert_outputs_on_chain(node: KernelNode, row: TxRow) -> None:
    """Every output of the persisted tx is an unspent output on the kernel's chain."""
    for n, o in enumerate(Tx.parse(row.raw).outputs):
        utxo = run(node.get_utxo(row.txid, n))
        assert utxo is not None and (utxo.value, utxo.script) == (o.value, o.script)
