"""Pool authority keys in the text forms SV2 uses (sv2-spec ``04-Protocol-Security.md`` §4.7).

* **Public key** (spec §4.7): base58check of ``[0x01, 0x00] || xonly32`` — a little-endian u16
  version prefix, currently 1, then the 32-byte BIP-340 x-only key. Test vector (spec §4.7.1):
  ``7663700097…748a7455`` ↔ ``9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh``. Downstreams
  configure it (or read it from the mining URL path) to authenticate the server's certificate.
* **Secret key**: not in the spec. SRI's configs (``authority_secret_key``) use base58check of the
  raw 32-byte secret with no prefix (SRI ``key_utils``:
  ``bs58::encode(secret_bytes).with_check()``); we accept and produce the same so that SRI
  config files work unchanged.

base58check = base58(payload || SHA256d(payload)[:4]) (Bitcoin's Base58Check without a version
byte of its own: the SV2 prefix is part of the payload). The base58 alphabet coding comes from
python-bitcoinlib (pinned); the checksum is done here because bitcoinlib's ``CBase58Data`` assumes
a one-byte version.
"""

from __future__ import annotations

import hashlib

import coincurve
from bitcoin import base58

from payouts.crypto.ellswift import is_valid_secret_key
from payouts.errors import ValidationError

AUTHORITY_KEY_VERSION = 1
"""The only public-key version defined (spec §4.7: prefix ``[1, 0]``, LE u16)."""

_PUBKEY_PREFIX = AUTHORITY_KEY_VERSION.to_bytes(2, "little")

__all__ = [
    "AUTHORITY_KEY_VERSION",
    "AuthorityKeyError",
    "authority_public_key",
    "base58check_decode",
    "base58check_encode",
    "decode_authority_public_key",
    "decode_authority_secret_key",
    "encode_authority_public_key",
    "encode_authority_secret_key",
]


class AuthorityKeyError(ValidationError):
    """A configured authority key string is malformed (checksum, version, length, curve)."""

    code = "invalid-authority-key"


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def base58check_encode(payload: bytes) -> str:
    """base58(payload || first 4 bytes of SHA256(SHA256(payload)))."""
    return str(base58.encode(payload + _checksum(payload)))


def base58check_decode(text: str) -> bytes:
    """Inverse of :func:`base58check_encode`; raises :class:`AuthorityKeyError` on a bad string."""
    try:
        raw = bytes(base58.decode(text.strip()))
    except base58.Base58Error as exc:
        raise AuthorityKeyError(f"not base58: {exc}") from exc
    if len(raw) < 4:
        raise AuthorityKeyError("base58check string too short")
    payload, check = raw[:-4], raw[-4:]
    if _checksum(payload) != check:
        raise AuthorityKeyError("base58check checksum mismatch")
    return payload


def _require_xonly(xonly: bytes) -> None:
    if len(xonly) != 32:
        raise AuthorityKeyError(f"x-only public key must be 32 bytes, got {len(xonly)}")
    try:
        coincurve.PublicKeyXOnly(xonly)
    except ValueError as exc:  # x is not the X coordinate of a curve point (or is >= p)
        raise AuthorityKeyError("x-only public key is not on secp256k1") from exc


def encode_authority_public_key(xonly: bytes) -> str:
    """Spec §4.7 form of a 32-byte x-only authority public key."""
    _require_xonly(xonly)
    return base58check_encode(_PUBKEY_PREFIX + xonly)


def decode_authority_public_key(text: str) -> bytes:
    """Parse the spec §4.7 form and return the 32-byte x-only key.

    Rejects a version other than 1 (as SRI ``key_utils`` does) and, unlike SRI, any length other
    than exactly 34 payload bytes: trailing bytes would mean a format we do not know.
    """
    payload = base58check_decode(text)
    if len(payload) != 34:
        raise AuthorityKeyError(
            f"authority public key payload must be 34 bytes, got {len(payload)}"
        )
    version = int.from_bytes(payload[:2], "little")
    if version != AUTHORITY_KEY_VERSION:
        raise AuthorityKeyError(f"unknown authority public key version {version}")
    xonly = payload[2:]
    _require_xonly(xonly)
    return xonly


def encode_authority_secret_key(seckey: bytes) -> str:
    """SRI ``authority_secret_key`` form: base58check of the raw 32-byte secret, no prefix."""
    if not is_valid_secret_key(seckey):
        raise AuthorityKeyError("secret key must be 32 bytes in [1, n-1]")
    return base58check_encode(seckey)


def decode_authority_secret_key(text: str) -> bytes:
    """Parse SRI's ``authority_secret_key`` form and return the 32-byte secret."""
    seckey = base58check_decode(text)
    if not is_valid_secret_key(seckey):
        raise AuthorityKeyError("authority secret key must decode to 32 bytes in [1, n-1]")
    return seckey


def authority_public_key(seckey: bytes) -> bytes:
    """32-byte x-only public key of an authority secret key (the key certificates verify under)."""
    if not is_valid_secret_key(seckey):
        raise AuthorityKeyError("secret key must be 32 bytes in [1, n-1]")
    return bytes(coincurve.PrivateKey(seckey).public_key.format()[1:])
