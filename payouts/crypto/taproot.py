"""BIP-341 taproot: tap leaf/branch hashes, script trees, output-key and secret-key tweaks.

* ``tapleaf_hash`` / ``tapbranch_hash`` / ``taptree_root`` / ``control_block``: BIP-341's
  ``taproot_tree_helper`` and control-block layout (``ComputeTapleafHash``,
  ``ComputeTapbranchHash`` in Core's script/interpreter.cpp).
* ``tweak_pubkey``: ``taproot_tweak_pubkey`` via ``secp256k1_xonly_pubkey_tweak_add``
  (``XOnlyPubKey::CreateTapTweak`` in Core).
* ``tweak_seckey``: ``taproot_tweak_seckey`` via ``secp256k1_keypair_xonly_tweak_add``, which
  negates the key for an odd-y point itself; coincurve has no public method for it (libs.md §2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from payouts.crypto.schnorr import (
    SchnorrError,
    keypair,
    parse_xonly,
    serialize_xonly,
    sign_with_keypair,
    xonly_from_keypair,
)
from payouts.crypto.secp import CTX, check, ffi, lib
from payouts.tx.compact import ser_compact_size
from payouts.tx.hashes import tagged_hash

TAPSCRIPT_LEAF_VERSION = 0xC0


@dataclass(frozen=True, slots=True)
class TapLeaf:
    script: bytes
    leaf_version: int = TAPSCRIPT_LEAF_VERSION

    def __post_init__(self) -> None:
        if self.leaf_version & 1 or not 0 <= self.leaf_version <= 0xFE:
            raise ValueError("a leaf version is even and below 0xff (BIP-341)")

    @property
    def hash(self) -> bytes:
        return tapleaf_hash(self.script, self.leaf_version)


# A script tree: a leaf, or a pair of subtrees (BIP-341's nested-list representation).
TapTree = Union[TapLeaf, tuple["TapTree", "TapTree"]]  # noqa: UP007 - recursive alias


def tapleaf_hash(script: bytes, leaf_version: int = TAPSCRIPT_LEAF_VERSION) -> bytes:
    """``hash_TapLeaf(leaf_version || compact_size(len(script)) || script)``."""
    return tagged_hash("TapLeaf", bytes((leaf_version,)) + ser_compact_size(len(script)) + script)


def tapbranch_hash(a: bytes, b: bytes) -> bytes:
    """``hash_TapBranch`` of two child hashes, in lexicographic order."""
    return tagged_hash("TapBranch", a + b if a < b else b + a)


def taptree_paths(tree: TapTree) -> tuple[bytes, list[tuple[TapLeaf, bytes]]]:
    """BIP-341 ``taproot_tree_helper``: (root hash, [(leaf, merkle path bytes)...]) in
    depth-first order."""
    if isinstance(tree, TapLeaf):
        return tree.hash, [(tree, b"")]
    left_h, left = taptree_paths(tree[0])
    right_h, right = taptree_paths(tree[1])
    paths = [(leaf, p + right_h) for leaf, p in left] + [(leaf, p + left_h) for leaf, p in right]
    return tapbranch_hash(left_h, right_h), paths


def taptree_root(tree: TapTree | None) -> bytes | None:
    return None if tree is None else taptree_paths(tree)[0]


def taproot_tweak(internal_key: bytes, merkle_root: bytes | None) -> bytes:
    """``t = hash_TapTweak(P || merkle_root)``; an empty root for a key-path-only output."""
    if merkle_root is not None and len(merkle_root) != 32:
        raise ValueError("a taproot merkle root is 32 bytes")
    return tagged_hash("TapTweak", internal_key + (merkle_root or b""))


def tweak_pubkey(internal_key: bytes, merkle_root: bytes | None = None) -> tuple[bytes, int]:
    """``taproot_tweak_pubkey``: (output x-only key Q, parity of Q's y)."""
    xpk = parse_xonly(internal_key)
    tweak = taproot_tweak(internal_key, merkle_root)
    full = ffi.new("secp256k1_pubkey *")
    check(lib.secp256k1_xonly_pubkey_tweak_add(CTX, full, xpk, tweak), "xonly_pubkey_tweak_add")
    out_x = ffi.new("secp256k1_xonly_pubkey *")
    parity = ffi.new("int *")
    check(lib.secp256k1_xonly_pubkey_from_pubkey(CTX, out_x, parity, full), "xonly_from_pubkey")
    return serialize_xonly(out_x), int(parity[0])


def tweak_keypair(seckey: bytes, merkle_root: bytes | None = None) -> object:
    """A keypair for the tweaked secret key (BIP-341 ``taproot_tweak_seckey``)."""
    kp = keypair(seckey)
    internal = xonly_from_keypair(kp)[0]
    tweak = taproot_tweak(internal, merkle_root)
    if lib.secp256k1_keypair_xonly_tweak_add(CTX, kp, tweak) != 1:
        raise SchnorrError("taproot tweak produced an invalid key")  # negligible probability
    return kp


def tweak_seckey(seckey: bytes, merkle_root: bytes | None = None) -> bytes:
    """BIP-341 ``taproot_tweak_seckey``: the secret key of the output key Q."""
    kp = tweak_keypair(seckey, merkle_root)
    out = ffi.new("unsigned char[32]")
    check(lib.secp256k1_keypair_sec(CTX, out, kp), "keypair_sec")
    return bytes(ffi.buffer(out, 32))


def p2tr_script(output_key: bytes) -> bytes:
    """``OP_1 <32-byte output key>`` (BIP-341 witness v1 program)."""
    if len(output_key) != 32:
        raise ValueError("a taproot output key is 32 bytes")
    return b"\x51\x20" + output_key


def p2tr_script_for(internal_key: bytes, tree: TapTree | None = None) -> bytes:
    """scriptPubKey of the taproot output for ``internal_key`` committing to ``tree``."""
    return p2tr_script(tweak_pubkey(internal_key, taptree_root(tree))[0])


def control_block(internal_key: bytes, tree: TapTree, leaf: TapLeaf) -> bytes:
    """BIP-341 control block for spending ``leaf``: (leaf_version | parity) || P || path."""
    root, paths = taptree_paths(tree)
    parity = tweak_pubkey(internal_key, root)[1]
    for candidate, path in paths:
        if candidate == leaf:
            return bytes((leaf.leaf_version | parity,)) + internal_key + path
    raise ValueError("leaf is not in the tree")


def sign_keypath(
    sighash: bytes,
    seckey: bytes,
    merkle_root: bytes | None = None,
    aux_rand: bytes | None = None,
    hash_type: int = 0,
) -> bytes:
    """Key-path witness signature: BIP-340 over the BIP-341 sighash with the tweaked key;
    the hash type byte is appended unless it is SIGHASH_DEFAULT (BIP-341)."""
    sig = sign_with_keypair(sighash, tweak_keypair(seckey, merkle_root), aux_rand)
    return sig if hash_type == 0 else sig + bytes((hash_type,))


def leaves(tree: TapTree) -> Sequence[TapLeaf]:
    return [leaf for leaf, _ in taptree_paths(tree)[1]]
