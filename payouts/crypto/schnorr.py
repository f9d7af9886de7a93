"""BIP-340 Schnorr signatures over libsecp256k1 (coincurve 21's bundled build, raw CFFI).

The raw API is used rather than ``coincurve.PrivateKey.sign_schnorr`` because that method only
signs 32-byte messages and treats ``aux_randomness=b""`` as "use urandom", which makes BIP-340's
fixed-aux test vectors awkward; ``secp256k1_schnorrsig_sign_custom`` signs any message length
with an explicit aux_rand. Every signature is verified before it is returned (as coincurve and
Core's ``CKey::SignSchnorr`` do) so a fault cannot leak a bad signature. All calls go through
the shared context whose illegal-argument callback raises instead of aborting.
"""

from __future__ import annotations

import os
from typing import Any

from payouts.crypto.secp import CTX, SecpError, check, ffi, lib

# SECP256K1_SCHNORRSIG_EXTRAPARAMS_MAGIC from include/secp256k1_schnorrsig.h.
_EXTRAPARAMS_MAGIC = bytes((0xDA, 0x6F, 0xB3, 0x8C))


class SchnorrError(SecpError):
    """Invalid secret key, public key or argument for BIP-340."""


def _check_seckey(seckey: bytes) -> None:
    if len(seckey) != 32:
        raise SchnorrError("a secret key is 32 bytes")
    if lib.secp256k1_ec_seckey_verify(CTX, seckey) != 1:
        raise SchnorrError("secret key is zero or not below the curve order")


def keypair(seckey: bytes) -> Any:
    """``secp256k1_keypair_create``: an opaque keypair struct (cffi object)."""
    _check_seckey(seckey)
    kp = ffi.new("secp256k1_keypair *")
    check(lib.secp256k1_keypair_create(CTX, kp, seckey), "keypair_create")
    return kp


def xonly_from_keypair(kp: Any) -> tuple[bytes, int]:
    """(32-byte x-only public key, parity of its y) of a keypair."""
    xpk = ffi.new("secp256k1_xonly_pubkey *")
    parity = ffi.new("int *")
    check(lib.secp256k1_keypair_xonly_pub(CTX, xpk, parity, kp), "keypair_xonly_pub")
    return serialize_xonly(xpk), int(parity[0])


def serialize_xonly(xpk: Any) -> bytes:
    """The 32 bytes of a parsed ``secp256k1_xonly_pubkey`` (BIP-340 public key encoding)."""
    out = ffi.new("unsigned char[32]")
    check(lib.secp256k1_xonly_pubkey_serialize(CTX, out, xpk), "xonly_pubkey_serialize")
    return bytes(ffi.buffer(out, 32))


def xonly_pubkey(seckey: bytes) -> bytes:
    """BIP-340 ``PubKey(sk)``: the x coordinate of sk·G."""
    return xonly_from_keypair(keypair(seckey))[0]


def parse_xonly(pubkey: bytes) -> Any:
    """``secp256k1_xonly_pubkey_parse`` (BIP-340 ``lift_x``); raises for an invalid key."""
    if len(pubkey) != 32:
        raise SchnorrError("an x-only public key is 32 bytes")
    xpk = ffi.new("secp256k1_xonly_pubkey *")
    if lib.secp256k1_xonly_pubkey_parse(CTX, xpk, pubkey) != 1:
        raise SchnorrError("not the x coordinate of a curve point")
    return xpk


def sign_with_keypair(msg: bytes, kp: Any, aux_rand: bytes | None = None) -> bytes:
    """BIP-340 ``Sign`` with a prepared keypair; ``aux_rand`` defaults to 32 fresh random
    bytes, as BIP-340 recommends."""
    aux = os.urandom(32) if aux_rand is None else aux_rand
    if len(aux) != 32:
        raise SchnorrError("aux_rand is 32 bytes")
    params = ffi.new("secp256k1_schnorrsig_extraparams *")
    ffi.memmove(params.magic, _EXTRAPARAMS_MAGIC, 4)
    params.noncefp = ffi.NULL  # NULL selects the BIP-340 nonce function
    aux_buf = ffi.new("unsigned char[32]", aux)
    params.ndata = aux_buf
    sig = ffi.new("unsigned char[64]")
    check(
        lib.secp256k1_schnorrsig_sign_custom(CTX, sig, msg, len(msg), kp, params),
        "schnorrsig_sign",
    )
    out = bytes(ffi.buffer(sig, 64))
    if not verify(out, msg, xonly_from_keypair(kp)[0]):
        raise SchnorrError("signature failed self-verification")  # pragma: no cover
    return out


def sign(msg: bytes, seckey: bytes, aux_rand: bytes | None = None) -> bytes:
    """BIP-340 ``Sign(sk, m)`` for a message of any length; returns the 64-byte signature."""
    return sign_with_keypair(msg, keypair(seckey), aux_rand)


def verify(sig: bytes, msg: bytes, pubkey: bytes) -> bool:
    """BIP-340 ``Verify(pk, m, sig)``. Returns False (never raises) for a bad signature or a
    public key that is not on the curve, as the BIP specifies."""
    if len(sig) != 64 or len(pubkey) != 32:
        return False
    try:
        xpk = parse_xonly(pubkey)
    except SchnorrError:
        return False
    return bool(lib.secp256k1_schnorrsig_verify(CTX, sig, msg, len(msg), xpk) == 1)
