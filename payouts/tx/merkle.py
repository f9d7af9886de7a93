"""Block merkle trees: root, the coinbase's merkle path, and the BIP-141 witness root.

``merkle_root`` is Core's ``ComputeMerkleRoot`` (consensus/merkle.cpp): SHA256d of pairs, the
last hash of an odd level paired with itself; ``mutated`` reports the CVE-2012-2459 pattern
(two equal siblings) that ``CheckBlock`` rejects as ``bad-txns-duplicate``.
``merkle_path`` is ``ComputeMerklePath`` (the branch SV2 sends as ``merkle_path``: sibling
hashes from the leaf up, the leaf itself excluded). All hashes are in internal byte order.
"""

from __future__ import annotations

from collections.abc import Sequence

from payouts.tx.hashes import sha256d


def merkle_root_mutated(hashes: Sequence[bytes]) -> tuple[bytes, bool]:
    """(root, mutated) as ``ComputeMerkleRoot(hashes, &mutated)``; the root of [] is 32 zeros."""
    if not hashes:
        return bytes(32), False
    level = list(hashes)
    mutated = False
    while len(level) > 1:
        for i in range(0, len(level) - 1, 2):
            if level[i] == level[i + 1]:
                mutated = True
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0], mutated


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    return merkle_root_mutated(hashes)[0]


def merkle_path(hashes: Sequence[bytes], index: int = 0) -> list[bytes]:
    """``ComputeMerklePath(leaves, position)``: the siblings needed to recompute the root from
    ``hashes[index]``. For SV2 ``merkle_path`` pass the block's txids with index 0 (the
    coinbase); the coinbase's own hash is not part of the path."""
    if not 0 <= index < len(hashes):
        raise IndexError("merkle leaf index out of range")
    path: list[bytes] = []
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        path.append(level[index ^ 1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        index >>= 1
    return path


def root_from_path(leaf: bytes, path: Sequence[bytes], index: int = 0) -> bytes:
    """Fold a merkle path back to the root (what a miner does with SV2's ``merkle_path``)."""
    h = leaf
    for sibling in path:
        h = sha256d(sibling + h) if index & 1 else sha256d(h + sibling)
        index >>= 1
    return h


def witness_merkle_root(wtxids: Sequence[bytes]) -> bytes:
    """``BlockWitnessMerkleRoot``: the merkle root of the wtxids with the coinbase's taken as
    32 zero bytes (BIP-141). Pass the wtxids of the non-coinbase txs only."""
    return merkle_root([bytes(32), *wtxids])
