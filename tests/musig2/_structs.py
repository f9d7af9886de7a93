"""TEST-ONLY loading of libsecp256k1 musig structs from BIP-327 vector bytes.

The BIP-327 vectors hand out secret nonces as 97 bytes (k1 || k2 || pk) and, for NonceGen, a raw
x-only ``aggpk`` instead of a key-aggregation context. libsecp256k1 keeps both in opaque structs
and offers no parser, so these helpers write the struct layout of libsecp256k1 v0.6 (the one
coincurve 21 bundles) directly, as documented in shared/reference/libs.md §1:

* secnonce (132 bytes) = magic 220edcf1 || k1 || k2 || ge_storage(pk), where ge_storage is the
  64-byte body of a parsed ``secp256k1_pubkey``;
* keyagg cache (197 bytes) = magic f4adbbdf || 64-byte pubkey body || zero padding, a stand-in
  whose aggregate key is lift_x(aggpk) (enough for NonceGen, which reads only that key).

This relies on library internals and must never be used outside tests: production code only ever
gets these structs from libsecp256k1 itself.
"""

from __future__ import annotations

from payouts.crypto.musig2 import KeyAggContext, SecNonce
from payouts.crypto.secp import CTX, check, ffi, lib

SECNONCE_MAGIC = bytes.fromhex("220edcf1")
KEYAGG_MAGIC = bytes.fromhex("f4adbbdf")
SECNONCE_SIZE = ffi.sizeof("secp256k1_musig_secnonce")
KEYAGG_SIZE = ffi.sizeof("secp256k1_musig_keyagg_cache")


def _pubkey_body(pk33: bytes) -> bytes:
    pk = ffi.new("secp256k1_pubkey *")
    check(lib.secp256k1_ec_pubkey_parse(CTX, pk, pk33, 33), "ec_pubkey_parse")
    return bytes(ffi.buffer(pk, 64))


def load_secnonce(secnonce97: bytes, pubnonce: bytes | None = None) -> SecNonce:
    """A :class:`SecNonce` whose struct holds the vector's k1, k2 and pk."""
    assert len(secnonce97) == 97
    raw = SECNONCE_MAGIC + secnonce97[:64] + _pubkey_body(secnonce97[64:])
    assert len(raw) == SECNONCE_SIZE
    sn = ffi.new("secp256k1_musig_secnonce *")
    ffi.memmove(sn, raw, SECNONCE_SIZE)
    return SecNonce(sn, secnonce97[64:], pubnonce)


def dump_secnonce(secnonce: SecNonce) -> bytes:
    """The BIP-327 97-byte encoding k1 || k2 || pk of a libsecp secnonce."""
    raw = bytes(ffi.buffer(secnonce._struct, SECNONCE_SIZE))
    assert raw[:4] == SECNONCE_MAGIC
    assert raw[68:] == _pubkey_body(secnonce.pubkey)  # the layout really is ge_storage(pk)
    return raw[4:68] + secnonce.pubkey


def keyagg_from_aggpk(aggpk: bytes) -> KeyAggContext:
    """A stand-in key-aggregation context whose (x-only) aggregate key is ``aggpk``."""
    raw = KEYAGG_MAGIC + _pubkey_body(b"\x02" + aggpk)
    raw += bytes(KEYAGG_SIZE - len(raw))
    cache = ffi.new("secp256k1_musig_keyagg_cache *")
    ffi.memmove(cache, raw, KEYAGG_SIZE)
    ctx = KeyAggContext(cache, ())
    assert ctx.xonly_pubkey == aggpk
    return ctx
