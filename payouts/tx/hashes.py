"""Hash functions used by Bitcoin consensus code.

``sha256d`` is Core's ``Hash()`` / ``HashWriter::GetHash`` (double SHA-256), ``hash160`` is
``Hash160`` (RIPEMD-160 of SHA-256), ``tagged_hash`` is BIP-340's ``hash_name(x)``.
All digests are returned in internal byte order; block and tx ids are *displayed* reversed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    """Core's ``Hash()``: SHA256(SHA256(data))."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    """Core's ``Hash160``: RIPEMD160(SHA256(data)).

    OpenSSL 3 may drop ripemd160 from its default provider, so fall back to a pure-Python
    implementation rather than failing on such systems.
    """
    inner = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", inner).digest()
    except ValueError:  # pragma: no cover - depends on the OpenSSL build
        from embit.util.py_ripemd160 import ripemd160

        return bytes(ripemd160(inner))


@lru_cache(maxsize=64)
def _tag_prefix(tag: str) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return t + t


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BIP-340 ``hash_tag(x) = SHA256(SHA256(tag) || SHA256(tag) || x)``."""
    return hashlib.sha256(_tag_prefix(tag) + data).digest()


def display_hex(h: bytes) -> str:
    """Hex in Bitcoin's display order (byte-reversed), as RPC shows txids and block hashes."""
    return h[::-1].hex()


def from_display_hex(s: str) -> bytes:
    """Inverse of :func:`display_hex`: a 32-byte id in internal byte order."""
    b = bytes.fromhex(s)[::-1]
    if len(b) != 32:
        raise ValueError(f"expected a 32-byte hash in hex, got {len(b)} bytes")
    return b
