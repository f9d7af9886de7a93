"""Compact (65-byte) message signatures as real wallets make them: Bitcoin Core's signmessage,
BIP-137 (Trezor, Sparrow) and Electrum's form (Electrum, Sparrow, Coldcard), for P2PKH, P2WPKH
and P2SH-P2WPKH, each made by an implementation other than ours.

Wallet vectors: the collection in bitcoinj's MessageVerifyUtilsTest (signatures produced by
Trezor, Electrum, Coldcard and bitcoinj, mainnet addresses). Fresh signatures: python-bitcoinlib's
``signmessage`` (the header it writes is Core's compressed-key one, 31..34, which is Electrum's
form for segwit addresses); the same (r, s) re-headed is what a BIP-137 wallet writes for the
segwit types (the header is the only difference).
"""

from __future__ import annotations

import base64

import pytest
from bitcoin.signmessage import BitcoinMessage, SignMessage
from bitcoin.wallet import CBitcoinSecret
from coincurve import PrivateKey

from payouts.crypto import bip322
from payouts.crypto.schnorr import xonly_pubkey
from payouts.crypto.taproot import tweak_pubkey
from payouts.tx.address import script_to_address
from payouts.tx.hashes import hash160

# (address, message, signature, who made it): every one must verify.
WALLET_VECTORS = [
    ("bc1qvcl0z7f25sf2u8up5wplk7arwclghh7de8fy6l",
     "This msg was signed with a native SegWit v0 address, the signature header byte therefore "
     "is in the range 39-42 (according to BIP 137).",
     "KH4/rrraZsPwuuW6pSKVnZVdZXmzLPBOPSS9zz6QLZnTGhO2mHFAs53QLPp94Hahz7kTgNiO6VYZpehMbNHIvNA=",
     "BIP-137 P2WPKH"),
    ("3HnHC8dJCqixUBFNYXdz2LFXQwvAkkTR3m",
     "This message was signed with a P2SH-P2WPKH address, the signature header byte therefore "
     "is in the range 35-38 (according to BIP 137).",
     "I6CwPW9ErVV8SphnQbHnOfYcwcqMdJaZRkym5QHzykpzVw38SrftZFaWoqMl+pvJ92hOyj8PjDOQOT2hDXtk5V0=",
     "BIP-137 P2SH-P2WPKH"),
    ("bc1qyjjkmdpu7metqt5r36jf872a34syws33s82q2j", "This is an example of a signed message.",
     "KJ4j7fDk5H/x3sJ/Ms14xQ507wGO6Kat81rhfHqbDdlvSLST/X26sD77b0OcY4PJUjs7vF8afRWKavkKsVTpvoA=",
     "Trezor P2WPKH"),
    ("3CwYaeWxhpXXiHue3ciQez1DLaTEAXcKa1", "This is an example of a signed message.",
     "JJ4j7fDk5H/x3sJ/Ms14xQ507wGO6Kat81rhfHqbDdlvSLST/X26sD77b0OcY4PJUjs7vF8afRWKavkKsVTpvoA=",
     "Trezor P2SH-P2WPKH"),
    ("14LmW5k4ssUrtbAB4255zdqv3b4w1TuX9e", "This is an example of a signed message.",
     "IJ4j7fDk5H/x3sJ/Ms14xQ507wGO6Kat81rhfHqbDdlvSLST/X26sD77b0OcY4PJUjs7vF8afRWKavkKsVTpvoA=",
     "Trezor P2PKH"),
    ("bc1q6nmtgxgfx2up7zuuydglme8fydugkh7jsrnz7f", "12345678",
     "J4cRzK+gDAJfGddCKB9EAHA2rOnxCZXowwGO/Zu4AmMvONsAE0b8vTez6pvMYl+gTjyn9AJv7PieFrGVTSWKK4M=",
     "P2WPKH, BIP-137 header"),
    ("bc1qp2ltq2tgsjav3rq3lt38lzfnpzewv8fcharjyk", "1113875075",
     "HzXKbcRCe5By+a/7CRh0QMd6B2SdnDKcNKzieBRCkYtzCrBquTRZO49iDmwWqiAMphlpqmVQUxmHLSe0Y9GGysQ=",
     "Electrum P2WPKH (compressed-key header)"),
    ("33wW4GTkzMhgS3QvTP5K7jKY7i8zuzwqKg", "12345678",
     "I6N4ZR5jYHLO9HgpGjlWF87TU91cRELtg84TZmEJQnkGQ9XGNQiGd2MB+XKkbzPVpgbvqrgvbVV+n81X1m52TYI=",
     "P2SH-P2WPKH, BIP-137 header"),
    ("bc1qzeacswvlulg0jngad9gmtkvdp9lwum42wwzdu5", "Hello",
     "HxuuWQwjw0417fLV9L0kWbt7w9XOIWKhHMhjXhyXTczcSozGTXM4knqdISiYbbmqSRXqI5mNTWH9qkDoqZTpnPc=",
     "Coldcard P2WPKH (compressed-key header)"),
    ("1PMycacnJaSqwwJqjawXBErnLsZ7RkXUAs", "vires is numeris",
     "H8JawPtQOrybrSP1WHQnQPr67B9S3qrxBrl1mlzoTJOSHEpmnF7D3+t+LX0Xei9J20B5AIdPbeL3AaTBZ4N3bY0=",
     "P2PKH, compressed key"),
    ("16UwLL9Risc3QfPqBUvKofHmBQ7wMtjvM", "vires is numeris",
     "G8JawPtQOrybrSP1WHQnQPr67B9S3qrxBrl1mlzoTJOSHEpmnF7D3+t+LX0Xei9J20B5AIdPbeL3AaTBZ4N3bY0=",
     "P2PKH, uncompressed key"),
]

# (address, message, signature, why it must fail)
WALLET_FAILURES = [
    ("16UwLL9Risc3QfPqBUvKofHmBQ7wMtjvM", "foobar",
     "G8JawPtQOrybrSP1WHQnQPr67B9S3qrxBrl1mlzoTJOSHEpmnF7D3+t+LX0Xei9J20B5AIdPbeL3AaTBZ4N3bY0=",
     "another message"),
    ("16UwLL9Risc3QfPqBUvKofHmBQ7wMtjvM", "vires is numeris",
     "H8JawPtQOrybrSP1WHQnQPr67B9S3qrxBrl1mlzoTJOSHEpmnF7D3+t+LX0Xei9J20B5AIdPbeL3AaTBZ4N3bY0=",
     "compressed flag for an uncompressed-key address"),
    ("1PMycacnJaSqwwJqjawXBErnLsZ7RkXUAs", "vires is numeris",
     "G8JawPtQOrybrSP1WHQnQPr67B9S3qrxBrl1mlzoTJOSHEpmnF7D3+t+LX0Xei9J20B5AIdPbeL3AaTBZ4N3bY0=",
     "uncompressed flag for a compressed-key address"),
    ("bc1qyjjkmdpu7metqt5r36jf872a34syws33s82q2j", "This is an example of a signed message.",
     "JJ4j7fDk5H/x3sJ/Ms14xQ507wGO6Kat81rhfHqbDdlvSLST/X26sD77b0OcY4PJUjs7vF8afRWKavkKsVTpvoA=",
     "a P2SH-P2WPKH header on a P2WPKH address"),
    ("3CwYaeWxhpXXiHue3ciQez1DLaTEAXcKa1", "This is an example of a signed message.",
     "KJ4j7fDk5H/x3sJ/Ms14xQ507wGO6Kat81rhfHqbDdlvSLST/X26sD77b0OcY4PJUjs7vF8afRWKavkKsVTpvoA=",
     "a P2WPKH header on a P2SH address"),
]


@pytest.mark.parametrize(("address", "message", "sig", "who"), WALLET_VECTORS,
                         ids=[v[3] for v in WALLET_VECTORS])
def test_wallet_signatures_verify(address: str, message: str, sig: str, who: str) -> None:
    bip322.verify(address, message, sig, "mainnet")


@pytest.mark.parametrize(("address", "message", "sig", "why"), WALLET_FAILURES,
                         ids=[v[3] for v in WALLET_FAILURES])
def test_wallet_signatures_that_must_fail(address: str, message: str, sig: str,
                                          why: str) -> None:
    with pytest.raises(bip322.Bip322Error, match="invalid signature"):
        bip322.verify(address, message, sig, "mainnet")


SECRET = bytes.fromhex("7b" * 32)  # a throwaway test key


def _regtest_addresses(seckey: bytes) -> dict[str, str]:
    h = hash160(PrivateKey(seckey).public_key.format(compressed=True))
    return {
        "p2pkh": script_to_address(b"\x76\xa9\x14" + h + b"\x88\xac", "regtest"),
        "p2wpkh": script_to_address(b"\x00\x14" + h, "regtest"),
        "p2sh-p2wpkh": script_to_address(
            b"\xa9\x14" + hash160(b"\x00\x14" + h) + b"\x87", "regtest"),
    }


def _bitcoinlib_signmessage(seckey: bytes, message: str) -> str:
    """python-bitcoinlib's signmessage: Core's format, compressed key (header 31..34)."""
    key = CBitcoinSecret.from_secret_bytes(seckey, compressed=True)
    return SignMessage(key, BitcoinMessage(message)).decode()


def _reheaded(sig: str, base: int) -> str:
    raw = bytearray(base64.b64decode(sig))
    raw[0] = base + (raw[0] - 27) % 4
    return base64.b64encode(bytes(raw)).decode()


MESSAGE = "payouts.dev miner registration\nnetwork: regtest\naccount: alice"


@pytest.mark.parametrize("kind", ["p2pkh", "p2wpkh", "p2sh-p2wpkh"])
def test_python_bitcoinlib_signmessage_verifies_for_every_single_key_type(kind: str) -> None:
    address = _regtest_addresses(SECRET)[kind]
    sig = _bitcoinlib_signmessage(SECRET, MESSAGE)
    assert 31 <= base64.b64decode(sig)[0] <= 34
    bip322.verify(address, MESSAGE, sig, "regtest")
    with pytest.raises(bip322.Bip322Error, match="invalid signature"):
        bip322.verify(address, MESSAGE + ".", sig, "regtest")
    other = _regtest_addresses(bytes.fromhex("7c" * 32))[kind]
    with pytest.raises(bip322.Bip322Error, match="does not match"):
        bip322.verify(other, MESSAGE, sig, "regtest")


@pytest.mark.parametrize(("kind", "base"), [("p2wpkh", 39), ("p2sh-p2wpkh", 35)])
def test_bip137_headers_for_segwit(kind: str, base: int) -> None:
    address = _regtest_addresses(SECRET)[kind]
    sig = _reheaded(_bitcoinlib_signmessage(SECRET, MESSAGE), base)
    bip322.verify(address, MESSAGE, sig, "regtest")
    # the other segwit type's header is refused: it names another address form
    other_kind = "p2sh-p2wpkh" if kind == "p2wpkh" else "p2wpkh"
    with pytest.raises(bip322.Bip322Error, match="header byte"):
        bip322.verify(_regtest_addresses(SECRET)[other_kind], MESSAGE, sig, "regtest")


def test_a_p2pkh_address_refuses_segwit_headers() -> None:
    address = _regtest_addresses(SECRET)["p2pkh"]
    sig = _reheaded(_bitcoinlib_signmessage(SECRET, MESSAGE), 39)
    with pytest.raises(bip322.Bip322Error, match="expected 27-34"):
        bip322.verify(address, MESSAGE, sig, "regtest")


@pytest.mark.parametrize(("kind", "names"), [
    ("p2wpkh", ["P2WPKH", "BIP-322 simple", "39-42", "Electrum"]),
    ("p2sh-p2wpkh", ["P2SH", "35-38", "Electrum"]),
])
def test_an_undecodable_signature_names_the_accepted_formats(kind: str,
                                                             names: list[str]) -> None:
    address = _regtest_addresses(SECRET)[kind]
    junk = base64.b64encode(b"\x05" + b"\x00" * 10).decode()  # 5 items promised, none there
    with pytest.raises(bip322.Bip322Error) as err:
        bip322.verify(address, MESSAGE, junk, "regtest")
    assert err.value.code == "bip322-malformed"
    for word in names:
        assert word in err.value.message


def test_a_taproot_address_says_it_has_no_compact_form() -> None:
    address = script_to_address(b"\x51\x20" + tweak_pubkey(xonly_pubkey(SECRET))[0], "regtest")
    sig = _bitcoinlib_signmessage(SECRET, MESSAGE)
    with pytest.raises(bip322.Bip322Error) as err:
        bip322.verify(address, MESSAGE, sig, "regtest")
    assert "no compact signature format exists" in err.value.message
