"""BIP-340 and BIP-341 official vectors against payouts.crypto.schnorr / taproot / tx.sighash."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from payouts.crypto import schnorr
from payouts.crypto.taproot import (
    TapLeaf,
    TapTree,
    control_block,
    p2tr_script,
    sign_keypath,
    taproot_tweak,
    taptree_paths,
    tweak_pubkey,
    tweak_seckey,
)
from payouts.tx.address import script_to_address
from payouts.tx.sighash import SighashError, taproot_sighash, taproot_sigmsg
from payouts.tx.transaction import Tx
from payouts.tx.txout import TxOut


def _bip340(vectors: Path) -> list[dict[str, str]]:
    with open(vectors / "bip-0340" / "test-vectors.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_bip340_vectors(vectors: Path) -> None:
    rows = _bip340(vectors)
    assert len(rows) >= 15
    signed = verified = 0
    for row in rows:
        msg = bytes.fromhex(row["message"])
        sig = bytes.fromhex(row["signature"])
        pk = bytes.fromhex(row["public key"])
        expected = row["verification result"] == "TRUE"
        if row["secret key"]:
            sk = bytes.fromhex(row["secret key"])
            assert schnorr.xonly_pubkey(sk) == pk, row["index"]
            assert schnorr.sign(msg, sk, bytes.fromhex(row["aux_rand"])) == sig, row["index"]
            signed += 1
        assert schnorr.verify(sig, msg, pk) is expected, row["index"]
        verified += 1
    assert verified == len(rows)
    assert signed >= 8  # every row with a secret key, incl. the 0/1/17/100-byte messages


def test_sign_random_aux_and_flipped_bit() -> None:
    sk = bytes(31) + b"\x07"
    msg = b"\x11" * 32
    s1, s2 = schnorr.sign(msg, sk), schnorr.sign(msg, sk)
    assert s1 != s2  # fresh aux randomness each time
    pk = schnorr.xonly_pubkey(sk)
    assert schnorr.verify(s1, msg, pk) and schnorr.verify(s2, msg, pk)
    bad = bytearray(s1)
    bad[10] ^= 1
    assert not schnorr.verify(bytes(bad), msg, pk)
    assert not schnorr.verify(s1, msg, b"\xff" * 32)  # not a valid x coordinate
    with pytest.raises(schnorr.SchnorrError):
        schnorr.sign(msg, bytes(32))


def _tree(node: Any) -> TapTree:
    if isinstance(node, dict):
        return TapLeaf(bytes.fromhex(node["script"]), node["leafVersion"])
    return (_tree(node[0]), _tree(node[1]))


def _wallet(vectors: Path) -> dict[str, Any]:
    path = vectors / "bip-0341" / "wallet-test-vectors.json"
    if not path.exists():
        pytest.skip("bip-0341 wallet-test-vectors.json not present")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_bip341_script_pubkeys(vectors: Path) -> None:
    cases = _wallet(vectors)["scriptPubKey"]
    assert len(cases) == 7
    for case in cases:
        internal = bytes.fromhex(case["given"]["internalPubkey"])
        inter, exp = case["intermediary"], case["expected"]
        tree = None if case["given"]["scriptTree"] is None else _tree(case["given"]["scriptTree"])
        root = None
        if tree is not None:
            root, paths = taptree_paths(tree)
            assert root.hex() == inter["merkleRoot"]
            assert [leaf.hash.hex() for leaf, _ in paths] == inter["leafHashes"]
            blocks = [control_block(internal, tree, leaf).hex() for leaf, _ in paths]
            assert blocks == exp["scriptPathControlBlocks"]
        assert taproot_tweak(internal, root).hex() == inter["tweak"]
        q, _ = tweak_pubkey(internal, root)
        assert q.hex() == inter["tweakedPubkey"]
        assert p2tr_script(q).hex() == exp["scriptPubKey"]
        assert script_to_address(p2tr_script(q), "main") == exp["bip350Address"]


def test_bip341_keypath_spending(vectors: Path) -> None:
    (case,) = _wallet(vectors)["keyPathSpending"]
    tx = Tx.parse(bytes.fromhex(case["given"]["rawUnsignedTx"]))
    spent = [
        TxOut(u["amountSats"], bytes.fromhex(u["scriptPubKey"]))
        for u in case["given"]["utxosSpent"]
    ]
    checked = 0
    for inp in case["inputSpending"]:
        g, inter, exp = inp["given"], inp["intermediary"], inp["expected"]
        idx, ht = g["txinIndex"], g["hashType"]
        root = bytes.fromhex(g["merkleRoot"]) if g["merkleRoot"] else None
        sk = bytes.fromhex(g["internalPrivkey"])
        assert schnorr.xonly_pubkey(sk).hex() == inter["internalPubkey"]
        assert tweak_seckey(sk, root).hex() == inter["tweakedPrivkey"]
        assert taproot_sigmsg(tx, idx, spent, ht).hex() == inter["sigMsg"]
        sighash = taproot_sighash(tx, idx, spent, ht)
        assert sighash.hex() == inter["sigHash"]
        sig = sign_keypath(sighash, sk, root, aux_rand=bytes(32), hash_type=ht)
        assert [sig.hex()] == exp["witness"]
        checked += 1
    assert checked == 7


def test_sighash_rejects_bad_hash_type_and_single_without_output(vectors: Path) -> None:
    (case,) = _wallet(vectors)["keyPathSpending"]
    tx = Tx.parse(bytes.fromhex(case["given"]["rawUnsignedTx"]))
    spent = [
        TxOut(u["amountSats"], bytes.fromhex(u["scriptPubKey"]))
        for u in case["given"]["utxosSpent"]
    ]
    with pytest.raises(SighashError):
        taproot_sighash(tx, 0, spent, 0x04)
    with pytest.raises(SighashError):
        taproot_sighash(tx, 5, spent, 0x03)  # 2 outputs only
    with pytest.raises(SighashError):
        taproot_sighash(tx, 0, spent[:3])
