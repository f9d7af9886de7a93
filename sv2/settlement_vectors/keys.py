"""Example keys and output scripts of the 0x4003 conformance vectors.

Every key is derived from a small secret (the integer ``i`` as 32 big-endian bytes) with
libsecp256k1 (coincurve): real curve points, so that every output the vectors describe can be
built and spent, but **examples only**: anyone can spend from these keys, never use them.
"""

from __future__ import annotations

from payouts.crypto.musig2 import individual_pubkey
from payouts.crypto.schnorr import xonly_pubkey
from payouts.tx.hashes import hash160


def secret(i: int) -> bytes:
    """The example secret key ``i`` (1 ≤ i < n)."""
    return i.to_bytes(32, "big")


def pubkey(i: int) -> bytes:
    """33-byte compressed public key of secret ``i`` (a BIP-327 individual key)."""
    return individual_pubkey(secret(i))


def xonly(i: int) -> bytes:
    """BIP-340 x-only public key of secret ``i``."""
    return xonly_pubkey(secret(i))


def p2tr(i: int) -> bytes:
    """``OP_1 <xonly(i)>`` (34-byte script, 43-byte output; untweaked: an example)."""
    return b"\x51\x20" + xonly(i)


def p2wpkh(i: int) -> bytes:
    """``OP_0 <hash160(pubkey(i))>`` (22-byte script, 31-byte output)."""
    return b"\x00\x14" + hash160(pubkey(i))


def p2sh(i: int) -> bytes:
    """``OP_HASH160 <hash160(p2wpkh(i))> OP_EQUAL`` (nested P2WPKH; 23-byte script, 32-byte
    output)."""
    return b"\xa9\x14" + hash160(p2wpkh(i)) + b"\x87"


def p2pkh(i: int) -> bytes:
    """``OP_DUP OP_HASH160 <hash160(pubkey(i))> OP_EQUALVERIFY OP_CHECKSIG`` (25-byte script,
    34-byte output, sigop cost 4)."""
    return b"\x76\xa9\x14" + hash160(pubkey(i)) + b"\x88\xac"


def bare_multisig(i: int) -> bytes:
    """``OP_1 <pubkey(i)> OP_1 OP_CHECKMULTISIG``: 37-byte script, sigop cost 80 (legacy
    counting), the sigop-dense kind of script the settlement modes refuse."""
    return b"\x51\x21" + pubkey(i) + b"\x51\xae"


__all__ = [
    "bare_multisig",
    "p2pkh",
    "p2sh",
    "p2tr",
    "p2wpkh",
    "pubkey",
    "secret",
    "xonly",
]
