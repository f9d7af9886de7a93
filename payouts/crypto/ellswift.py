"""ElligatorSwift encodings and BIP-324 x-only ECDH over libsecp256k1's ``ellswift`` module.

Stratum V2's Noise handshake (sv2-spec ``04-Protocol-Security.md`` §4.3.1, §4.4.2) carries every
handshake public key as a 64-byte ElligatorSwift encoding (BIP-324) and defines
``ECDH(k, rk) = v2_ecdh(...)``, which is exactly libsecp256k1's ``secp256k1_ellswift_xdh`` with the
``bip324`` hash function:

    SHA256(T || T || ell_initiator || ell_responder || x_shared)
    T = SHA256("bip324_ellswift_xonly_ecdh")

The result is *not* symmetric in the two encodings: the initiator's encoding always comes first
("party A", ``party = 0`` in libsecp256k1), whichever side computes it.

coincurve 21 exposes these functions only as raw CFFI, so this module is a thin typed wrapper.
All calls go through :data:`payouts.crypto.secp.CTX`, whose illegal-argument callback raises
instead of aborting the process.
"""

from __future__ import annotations

from typing import Any

from payouts.crypto.secp import CTX, SecpError, check, ffi, lib

ELLSWIFT_SIZE = 64
"""Bytes in an ElligatorSwift encoding (BIP-324 ``ellswift``): ``u(32) || t(32)``."""

# Curve order: a 32-byte secret key must satisfy 0 < d < n (BIP-340 / SEC 2).
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

__all__ = [
    "ELLSWIFT_SIZE",
    "SECP256K1_ORDER",
    "SecpError",
    "ellswift_create",
    "ellswift_decode",
    "ellswift_decode_xonly",
    "ellswift_encode",
    "ellswift_xdh",
    "is_valid_secret_key",
]


def is_valid_secret_key(seckey: bytes) -> bool:
    """True iff ``seckey`` is 32 bytes with 0 < int(seckey) < n."""
    return len(seckey) == 32 and 0 < int.from_bytes(seckey, "big") < SECP256K1_ORDER


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(data)}")


def _serialize_compressed(pubkey: Any) -> bytes:
    out = ffi.new("unsigned char[33]")
    outlen = ffi.new("size_t *", 33)
    check(
        lib.secp256k1_ec_pubkey_serialize(CTX, out, outlen, pubkey, lib.SECP256K1_EC_COMPRESSED),
        "secp256k1_ec_pubkey_serialize",
    )
    return bytes(ffi.buffer(out, 33))


def ellswift_create(seckey: bytes, aux_rand: bytes | None = None) -> bytes:
    """Return the 64-byte ElligatorSwift encoding of ``seckey``'s public key.

    ``aux_rand`` (32 bytes) randomizes which of the many encodings of the point is chosen; BIP-324
    wants it fresh so that encodings are indistinguishable from random. ``None`` passes NULL, which
    libsecp256k1 accepts but makes the encoding a deterministic function of the key.
    """
    _need(seckey, 32, "secret key")
    if aux_rand is not None:
        _need(aux_rand, 32, "aux_rand")
    ell = ffi.new("unsigned char[64]")
    ok = lib.secp256k1_ellswift_create(CTX, ell, seckey, ffi.NULL if aux_rand is None else aux_rand)
    # Returns 0 only for an invalid secret key (zero or >= n).
    check(ok, "secp256k1_ellswift_create")
    return bytes(ffi.buffer(ell, ELLSWIFT_SIZE))


def ellswift_encode(pubkey: bytes, rnd32: bytes) -> bytes:
    """Encode a 33/65-byte SEC1 public key as 64-byte ElligatorSwift with randomness ``rnd32``."""
    _need(rnd32, 32, "rnd32")
    if len(pubkey) not in (33, 65):
        raise ValueError(f"public key must be 33 or 65 bytes, got {len(pubkey)}")
    pk = ffi.new("secp256k1_pubkey *")
    check(lib.secp256k1_ec_pubkey_parse(CTX, pk, pubkey, len(pubkey)), "secp256k1_ec_pubkey_parse")
    ell = ffi.new("unsigned char[64]")
    check(lib.secp256k1_ellswift_encode(CTX, ell, pk, rnd32), "secp256k1_ellswift_encode")
    return bytes(ffi.buffer(ell, ELLSWIFT_SIZE))


def ellswift_decode(ell64: bytes) -> bytes:
    """Decode a 64-byte ElligatorSwift encoding to a 33-byte compressed public key.

    Every 64-byte string decodes to a valid point (BIP-324 "ellswift_decode"), so this never fails
    on well-sized input. The Y parity of the result is the one BIP-324 assigns to the encoding;
    SV2 only ever uses the X coordinate.
    """
    _need(ell64, ELLSWIFT_SIZE, "ellswift encoding")
    pk = ffi.new("secp256k1_pubkey *")
    check(lib.secp256k1_ellswift_decode(CTX, pk, ell64), "secp256k1_ellswift_decode")
    return _serialize_compressed(pk)


def ellswift_decode_xonly(ell64: bytes) -> bytes:
    """Decode a 64-byte ElligatorSwift encoding to its 32-byte X coordinate (BIP-340 x-only key).

    This is how the SV2 certificate names the server's static key (sv2-spec §4.5.3: "the 64 byte
    EllSwift encoded server_public_key can be decoded to its 32 byte x-coordinate").
    """
    return ellswift_decode(ell64)[1:]


def ellswift_xdh(ell_a: bytes, ell_b: bytes, seckey: bytes, initiating: bool) -> bytes:
    """BIP-324 ``v2_ecdh``: 32-byte shared secret between ``seckey`` and the other party.

    ``ell_a`` is always the **initiator's** 64-byte encoding and ``ell_b`` the responder's.
    ``initiating`` says whose secret ``seckey`` is: True means it belongs to ``ell_a`` (libsecp256k1
    ``party = 0``), False means ``ell_b`` (``party = 1``). Both sides then derive the same value.
    """
    _need(ell_a, ELLSWIFT_SIZE, "ell_a")
    _need(ell_b, ELLSWIFT_SIZE, "ell_b")
    _need(seckey, 32, "secret key")
    # libsecp256k1 rejects only a zero key here and silently reduces one >= n mod n; an
    # out-of-range key is a caller bug, so refuse it instead of computing with a different key.
    if not is_valid_secret_key(seckey):
        raise SecpError("secp256k1_ellswift_xdh: invalid secret key")
    out = ffi.new("unsigned char[32]")
    ok = lib.secp256k1_ellswift_xdh(
        CTX,
        out,
        ell_a,
        ell_b,
        seckey,
        0 if initiating else 1,
        lib.secp256k1_ellswift_xdh_hash_function_bip324,
        ffi.NULL,
    )
    # The key was checked above and a decoded point is never infinity: 0 here is unexpected.
    check(ok, "secp256k1_ellswift_xdh")
    return bytes(ffi.buffer(out, 32))
