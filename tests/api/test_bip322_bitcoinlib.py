"""BIP-322 simple and full signatures made by python-bitcoinlib (its transactions, sighashes and
ECDSA signing; hashlib for the tagged message hash), not by the engine's own signer, for the
single-key address types wallets use: P2PKH (full only: a scriptSig cannot travel in a simple
signature), P2WPKH and P2SH-P2WPKH (simple and full)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from bitcoin.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    COutPoint,
    CTxInWitness,
    CTxWitness,
)
from bitcoin.core.script import (
    OP_0,
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUAL,
    OP_EQUALVERIFY,
    OP_HASH160,
    OP_RETURN,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from bitcoin.wallet import CBitcoinSecret

from payouts.crypto import bip322
from payouts.tx.address import script_to_address

SECRET = bytes.fromhex("3c" * 32)
MESSAGE = "payouts.dev miner registration\nnetwork: regtest\naccount: bob"


def _h160(b: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(b).digest()).digest()


def _tagged(msg: bytes) -> bytes:
    tag = hashlib.sha256(b"BIP0322-signed-message").digest()
    return hashlib.sha256(tag + tag + msg).digest()


def _virtual_txs(spk: CScript, message: str) -> tuple[CMutableTransaction, CMutableTransaction]:
    to_spend = CMutableTransaction(
        [CMutableTxIn(COutPoint(b"\x00" * 32, 0xFFFFFFFF),
                      CScript([OP_0, _tagged(message.encode())]), 0)],
        [CMutableTxOut(0, spk)], 0, 0)
    to_sign = CMutableTransaction(
        [CMutableTxIn(COutPoint(to_spend.GetTxid(), 0), CScript(), 0)],
        [CMutableTxOut(0, CScript([OP_RETURN]))], 0, 0)
    return to_spend, to_sign


def _signed(kind: str, message: str) -> tuple[str, CMutableTransaction]:
    """The address of SECRET for ``kind`` and a to_sign transaction signed by bitcoinlib."""
    key = CBitcoinSecret.from_secret_bytes(SECRET, compressed=True)
    pub = bytes(key.pub)
    keyhash = _h160(pub)
    p2pkh_code = CScript([OP_DUP, OP_HASH160, keyhash, OP_EQUALVERIFY, OP_CHECKSIG])
    if kind == "p2pkh":
        spk = p2pkh_code
    elif kind == "p2wpkh":
        spk = CScript([OP_0, keyhash])
    else:
        spk = CScript([OP_HASH160, _h160(bytes(CScript([OP_0, keyhash]))), OP_EQUAL])
    _, tx = _virtual_txs(spk, message)
    if kind == "p2pkh":
        digest = SignatureHash(p2pkh_code, tx, 0, SIGHASH_ALL)
        sig = key.sign(digest) + bytes([SIGHASH_ALL])
        tx.vin[0].scriptSig = CScript([sig, pub])
    else:
        digest = SignatureHash(p2pkh_code, tx, 0, SIGHASH_ALL, amount=0,
                               sigversion=SIGVERSION_WITNESS_V0)
        sig = key.sign(digest) + bytes([SIGHASH_ALL])
        tx.wit = CTxWitness([CTxInWitness(CScriptWitness([sig, pub]))])
        if kind == "p2sh-p2wpkh":
            tx.vin[0].scriptSig = CScript([bytes(CScript([OP_0, keyhash]))])
    return script_to_address(bytes(spk), "regtest"), tx


def _witness(tx: CMutableTransaction) -> bytes:
    stack = list(tx.wit.vtxinwit[0].scriptWitness.stack)
    return bip322.encode_witness(stack)


@pytest.mark.parametrize("kind", ["p2pkh", "p2wpkh", "p2sh-p2wpkh"])
def test_full_signatures_by_bitcoinlib(kind: str) -> None:
    address, tx = _signed(kind, MESSAGE)
    full = "ful" + base64.b64encode(tx.serialize()).decode()
    bip322.verify(address, MESSAGE, full, "regtest")
    with pytest.raises(bip322.Bip322Error, match="does not spend to_spend"):
        bip322.verify(address, MESSAGE + "!", full, "regtest")


@pytest.mark.parametrize("kind", ["p2wpkh", "p2sh-p2wpkh"])
def test_simple_signatures_by_bitcoinlib(kind: str) -> None:
    address, tx = _signed(kind, MESSAGE)
    witness = base64.b64encode(_witness(tx)).decode()
    bip322.verify(address, MESSAGE, "smp" + witness, "regtest")
    bip322.verify(address, MESSAGE, witness, "regtest")  # the original, unprefixed encoding
    with pytest.raises(bip322.Bip322Error, match="invalid signature"):
        bip322.verify(address, MESSAGE + "!", "smp" + witness, "regtest")

