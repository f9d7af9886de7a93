"""The witness-tree cache (sv2/jds/validation.py ``WitnessTrees``) returns exactly the BIP-141
witness root of ``payouts.tx.merkle`` whatever it reuses: prefixes of every length, odd and
even level sizes, lists shorter and longer than the cached tree, repeats, and the coinbase-only
block. ``hashed_nodes`` shows the reuse really happens."""

from __future__ import annotations

import random

from payouts.tx.coinbase import witness_commitment
from payouts.tx.hashes import sha256d
from payouts.tx.merkle import merkle_root
from sv2.jds.validation import WitnessTrees, witness_root


def reference(wtxids: list[bytes]) -> bytes:
    return merkle_root([bytes(32), *wtxids])  # BIP-141: the coinbase's wtxid is zero


def test_scratch_root_matches_reference_for_every_small_size() -> None:
    rng = random.Random(1)
    for n in [*range(0, 70), 255, 256, 257, 1023, 1024, 1025]:
        w = [rng.randbytes(32) for _ in range(n)]
        assert witness_root(w) == reference(w), n
    assert witness_root([]) == bytes(32)
    # and the commitment the JDS checks is the one the coinbase builder writes
    w = [rng.randbytes(32) for _ in range(9)]
    assert sha256d(witness_root(w) + bytes(32)) == witness_commitment(w)


def test_reuse_is_exact_for_prefixes_suffixes_and_repeats() -> None:
    rng = random.Random(2)
    for n in (0, 1, 2, 3, 7, 8, 9, 100, 333, 1000):
        base = [rng.randbytes(32) for _ in range(n)]
        trees = WitnessTrees(keep=3)
        trees.set_template(base)
        for _ in range(25):
            cut = rng.randint(0, n)
            tail = [rng.randbytes(32) for _ in range(rng.randint(0, 6))]
            if rng.random() < 0.3 and n:
                tail.append(base[rng.randrange(n)])  # an earlier leaf again, elsewhere
            w = base[:cut] + tail
            assert trees.root(w) == reference(w), (n, cut, len(tail))
            assert trees.root(w) == reference(w)  # the memoised answer too
            shorter = w[: rng.randint(0, len(w))]
            assert trees.root(shorter) == reference(shorter)


def test_template_tree_is_reused_and_a_shuffle_is_not() -> None:
    rng = random.Random(3)
    base = [rng.randbytes(32) for _ in range(1000)]
    trees = WitnessTrees()
    trees.set_template(base)
    full = trees.hashed_nodes
    assert full >= 1000  # the template tree was built once, from scratch
    trees.root(base)
    assert trees.hashed_nodes == full  # identical list: nothing hashed
    tail = base[:990] + [rng.randbytes(32) for _ in range(10)]
    assert trees.root(tail) == reference(tail)
    assert trees.hashed_nodes - full < 40  # only the right edge of the tree
    trees.forget_recent()
    shuffled = base[:]
    rng.shuffle(shuffled)
    before = trees.hashed_nodes
    assert trees.root(shuffled) == reference(shuffled)
    assert trees.hashed_nodes - before >= 990  # nothing shared: the whole tree
