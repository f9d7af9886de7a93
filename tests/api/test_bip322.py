"""BIP-322 verification: the official vectors, our own signatures, and tampering."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from payouts.crypto import bip322
from payouts.crypto.schnorr import xonly_pubkey
from payouts.crypto.taproot import tweak_pubkey
from payouts.tx.address import WrongNetworkError, script_to_address
from payouts.tx.hashes import hash160


def _vectors(vectors: Path) -> dict[str, Any]:
    path = vectors / "bip-0322" / "basic-test-vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_message_hash_and_virtual_txids(vectors: Path) -> None:
    for v in _vectors(vectors)["tx_hashes"]:
        script = bip322.decode_address_script(v["address"])
        spend = bip322.to_spend(script, v["message"])
        assert bip322.message_hash(v["message"]).hex() == v["message_hash"]
        assert spend.txid[::-1].hex() == v["to_spend_tx_hash"]
        assert bip322.to_sign(spend).txid[::-1].hex() == v["to_sign_tx_hash"]


def test_simple_vectors_verify(vectors: Path) -> None:
    # Every "simple" vector is in a format we cover: p2wpkh, p2wsh 3-of-3 multisig, p2tr,
    # with the "smp" prefix and without (the original encoding).
    n = 0
    for v in _vectors(vectors)["simple"]:
        for sig in v["bip322_signatures"]:
            bip322.verify(v["address"], v["message"], sig, "mainnet")
            n += 1
    assert n == 6


def test_error_vectors_fail_with_their_message(vectors: Path) -> None:
    for v in _vectors(vectors)["error"]:
        with pytest.raises(bip322.Bip322Error) as info:
            bip322.verify(v["address"], v["message"], v["signature"], "mainnet")
        assert v["error_substr"] in str(info.value), v["description"]


def test_wrong_network_is_refused_before_verifying(vectors: Path) -> None:
    v = _vectors(vectors)["simple"][0]
    with pytest.raises(WrongNetworkError):
        bip322.verify(v["address"], v["message"], v["bip322_signatures"][0], "regtest")


SECKEY = bytes.fromhex("11" * 32)


def _addresses(seckey: bytes) -> dict[str, str]:
    pub = PrivateKey(seckey).public_key.format(compressed=True)
    h = hash160(pub)
    redeem = b"\x00\x14" + h
    xonly = tweak_pubkey(xonly_pubkey(seckey))[0]
    return {
        "p2wpkh": script_to_address(b"\x00\x14" + h, "regtest"),
        "p2sh-p2wpkh": script_to_address(b"\xa9\x14" + hash160(redeem) + b"\x87", "regtest"),
        "p2tr": script_to_address(b"\x51\x20" + xonly, "regtest"),
        "p2pkh": script_to_address(b"\x76\xa9\x14" + h + b"\x88\xac", "regtest"),
    }


@pytest.mark.parametrize("kind", ["p2wpkh", "p2sh-p2wpkh", "p2tr"])
def test_own_simple_signatures_verify_and_tampering_fails(kind: str) -> None:
    addr = _addresses(SECKEY)[kind]
    sig = bip322.sign_simple(SECKEY, addr, "register pool-a", "regtest")
    bip322.verify(addr, "register pool-a", sig, "regtest")
    # Unprefixed (original) encoding of the same witness verifies too.
    bip322.verify(addr, "register pool-a", sig[3:], "regtest")
    with pytest.raises(bip322.Bip322Error, match="invalid signature"):
        bip322.verify(addr, "register pool-b", sig, "regtest")
    other = _addresses(bytes.fromhex("22" * 32))[kind]
    with pytest.raises(bip322.Bip322Error):
        bip322.verify(other, "register pool-a", sig, "regtest")
    raw = bytearray(base64.b64decode(sig[3:]))
    raw[5] ^= 1  # flip a bit inside the signature
    with pytest.raises(bip322.Bip322Error):
        bip322.verify(addr, "register pool-a", "smp" + base64.b64encode(raw).decode(), "regtest")


def test_full_signature_round_trip_and_rules() -> None:
    addr = _addresses(SECKEY)["p2tr"]
    sig = bip322.sign_simple(SECKEY, addr, "m", "regtest")
    stack = bip322.decode_witness(base64.b64decode(sig[3:]))
    script = bip322.decode_address_script(addr)
    tx = bip322.to_sign(bip322.to_spend(script, "m"), stack)
    bip322.verify(addr, "m", "ful" + base64.b64encode(tx.serialize()).decode(), "regtest")
    wrong = bip322.to_sign(bip322.to_spend(script, "other"), stack)
    with pytest.raises(bip322.Bip322Error, match="does not spend to_spend"):
        bip322.verify(addr, "m", "ful" + base64.b64encode(wrong.serialize()).decode(), "regtest")


def test_legacy_p2pkh() -> None:
    addr = _addresses(SECKEY)["p2pkh"]
    sig = bip322.sign_legacy(SECKEY, "hello")
    bip322.verify(addr, "hello", sig, "regtest")
    with pytest.raises(bip322.Bip322Error, match="does not match"):
        bip322.verify(addr, "hullo", sig, "regtest")
    # An uncompressed-key signature does not match the compressed-key address.
    with pytest.raises(bip322.Bip322Error):
        bip322.verify(addr, "hello", bip322.sign_legacy(SECKEY, "hello", compressed=False),
                      "regtest")


@pytest.mark.parametrize("sig", ["pofAA==", "smp", "smp!!", "smpAQ==", "smpAf8=", 12])
def test_garbage_is_a_typed_error(sig: Any) -> None:
    addr = _addresses(SECKEY)["p2wpkh"]
    with pytest.raises(bip322.Bip322Error):
        bip322.verify(addr, "m", sig, "regtest")
