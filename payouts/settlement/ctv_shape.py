"""The shape and the sizes of a CTV fan-out tree, before any amount or hash is known.

A fan-out spends one CTV-locked output into ``n`` leaf outputs (the pool payout, then the
payees, in the wire order of sv2-spec PR #203). With arity ``k`` the leaves are packed
**left-first into full subtrees** (docs/extensions/0x4003-settlement-modes.md §5.3, the rule
other implementations follow):

    group(items):
        if len(items) <= k: one tx whose outputs are the items
        cap = the smallest power of k with cap·k >= len(items)
        split items into consecutive chunks of cap; a chunk of one item is that item's output
        directly, a longer chunk is a child tx (spent through a CTV output) built by group()

Flat (``k = None``) is one tx with every leaf; without a given arity, :func:`choose_arity`
takes flat when the flat tx's exact vsize fits, else a :data:`DEFAULT_ARITY`-ary tree (§5.4).
Nodes are numbered in broadcast order: level by level from the root, left to right, so every
parent precedes its children.

Every tx has exactly one input that executes ``<hash> OP_CHECKTEMPLATEVERIFY``: bare (empty
scriptSig, no witness: 41 bytes) or a tapscript leaf under the BIP-341 NUMS key (the same 41
bytes plus a witness of 72 WU counting the segwit marker and flag, i.e. exactly 18 vB, so
vsizes are exact integers with no rounding). Sizes follow Core's ``GetTransactionWeight``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.tx.compact import compact_size_len

# Bytes of a tx around its outputs: nVersion 4 + input count 1 + the input (outpoint 36,
# empty scriptSig 1, nSequence 4) + nLockTime 4.
TX_FIXED_BYTES = 4 + 1 + 41 + 4
# Both commitment forms are 34-byte scripts: 8 value + 1 length + 34.
COMMITMENT_OUTPUT_BYTES = 43
ANCHOR_OUTPUT_BYTES = 13  # 8 + 1 + 4 (P2A: OP_1 <0x4e73>)
# Taproot script-path spend: marker+flag 2 + stack count 1 + (1 + 34 leaf) + (1 + 33 control).
TAPROOT_SPEND_WITNESS_WU = 2 + 1 + 35 + 34
WITNESS_SCALE_FACTOR = 4
# Chosen from benchmarks/bench_ctv.py (docs/ctv.md §7): the full unroll costs ~1.17× a flat
# fan-out's bytes (k=64: 1.04×), while a lone payee's forced exit is half of k=64's (3.2 vs
# 6.8 kvB at N = 100,000) and within 1.6× of the smallest (k=4, which costs 1.83× to unroll).
DEFAULT_ARITY = 16
assert TAPROOT_SPEND_WITNESS_WU % WITNESS_SCALE_FACTOR == 0  # no vsize rounding anywhere


@dataclass(frozen=True, slots=True)
class Node:
    """One fan-out tx. ``entries`` are its non-anchor outputs in order: ``i >= 0`` pays leaf
    ``i``, ``i < 0`` is the CTV output that node ``~i`` (= -i - 1) spends."""

    index: int
    level: int
    parent: int | None
    parent_vout: int  # index of the output of the parent that this node spends
    entries: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Shape:
    """Nodes in broadcast order (root first, then level by level, left to right)."""

    nodes: tuple[Node, ...]
    n_leaves: int
    arity: int | None

    @property
    def depth(self) -> int:
        """Number of txs on the longest root-to-leaf path."""
        return self.nodes[-1].level + 1

    def leaf_positions(self) -> list[tuple[int, int]]:
        """For each leaf: (node index, vout) of the output that pays it."""
        pos = [(0, 0)] * self.n_leaves
        for node in self.nodes:
            for vout, e in enumerate(node.entries):
                if e >= 0:
                    pos[e] = (node.index, vout)
        return pos

    def paths(self) -> list[tuple[int, ...]]:
        """For each node: node indices from the root down to it."""
        out: list[tuple[int, ...]] = []
        for node in self.nodes:
            out.append((0,) if node.parent is None else (*out[node.parent], node.index))
        return out


def _chunk(n: int, arity: int) -> int:
    """Size of the full subtrees a group of ``n > arity`` items is split into: the smallest
    power of ``arity`` whose ``arity`` copies hold ``n``."""
    cap = 1
    while cap * arity < n:
        cap *= arity
    return cap


def build_shape(n_leaves: int, arity: int | None) -> Shape:
    """The tree for ``n_leaves`` leaves (``arity=None``: flat). Deterministic in its inputs."""
    if n_leaves < 1:
        raise ValueError("a fan-out has at least one leaf (the pool payout)")
    if arity is not None and arity < 2:
        raise ValueError("a tree arity is at least 2")
    nodes: list[Node] = []
    # Breadth-first numbering over groups (first leaf, count, level, parent, parent_vout).
    queue: list[tuple[int, int, int, int | None, int]] = [(0, n_leaves, 0, None, 0)]
    head = 0
    while head < len(queue):
        start, count, level, parent, parent_vout = queue[head]
        index = head
        head += 1
        if arity is None or count <= arity:
            entries = tuple(range(start, start + count))
        else:
            cap = _chunk(count, arity)
            ent: list[int] = []
            for vout, first in enumerate(range(start, start + count, cap)):
                size = min(cap, start + count - first)
                if size == 1:
                    ent.append(first)
                else:
                    ent.append(~len(queue))
                    queue.append((first, size, level + 1, index, vout))
            entries = tuple(ent)
        nodes.append(Node(index, level, parent, parent_vout, entries))
    return Shape(tuple(nodes), n_leaves, arity)


def _node_overhead(n_out: int, n_children: int, anchor: bool, taproot: bool) -> int:
    """vbytes of a node besides its leaf outputs."""
    return (
        TX_FIXED_BYTES
        + compact_size_len(n_out + (1 if anchor else 0))
        + n_children * COMMITMENT_OUTPUT_BYTES
        + (ANCHOR_OUTPUT_BYTES if anchor else 0)
        + (TAPROOT_SPEND_WITNESS_WU // WITNESS_SCALE_FACTOR if taproot else 0)
    )


def shape_overhead(
    n_leaves: int, arity: int | None, *, anchor: bool, taproot: bool
) -> tuple[int, int]:
    """(number of txs, total vbytes minus the leaf outputs' bytes) of ``build_shape``'s tree,
    computed from the counts alone (equal-sized groups have equal subtrees)."""
    memo: dict[int, tuple[int, int]] = {}

    def walk(count: int) -> tuple[int, int]:
        if count in memo:
            return memo[count]
        if arity is None or count <= arity:
            res = (1, _node_overhead(count, 0, anchor, taproot))
        else:
            cap = _chunk(count, arity)
            sizes = [min(cap, count - f) for f in range(0, count, cap)]
            kids = [walk(s) for s in sizes if s > 1]
            res = (
                1 + sum(k[0] for k in kids),
                _node_overhead(len(sizes), len(kids), anchor, taproot) + sum(k[1] for k in kids),
            )
        memo[count] = res
        return res

    return walk(n_leaves)


def node_vsize(node: Node, leaf_sizes: Sequence[int], *, anchor: bool, taproot: bool) -> int:
    """Exact vsize of ``node``'s tx given the serialized size of each leaf output."""
    leaves = [e for e in node.entries if e >= 0]
    return _node_overhead(
        len(node.entries), len(node.entries) - len(leaves), anchor, taproot
    ) + sum(leaf_sizes[i] for i in leaves)


def shape_vsizes(
    shape: Shape, leaf_sizes: Sequence[int], *, anchor: bool, taproot: bool
) -> list[int]:
    return [node_vsize(n, leaf_sizes, anchor=anchor, taproot=taproot) for n in shape.nodes]


def flat_vsize(leaf_sizes: Sequence[int], *, anchor: bool, taproot: bool) -> int:
    """Exact vsize of the flat fan-out: one tx paying every leaf (then the anchor)."""
    return _node_overhead(len(leaf_sizes), 0, anchor, taproot) + sum(leaf_sizes)


def choose_arity(
    leaf_sizes: Sequence[int], arity: int | None, *, max_vsize: int, anchor: bool, taproot: bool
) -> int | None:
    """The tree arity for these leaves (None: flat). A given ``arity`` is used as is; without
    one (the wire's ``ctv_arity`` 0) the fan-out is flat when the flat tx's real vsize is at
    most ``max_vsize``, else a :data:`DEFAULT_ARITY`-ary tree (for at most that many leaves
    the same single tx, reported as flat)."""
    if arity is not None:
        return arity
    if flat_vsize(leaf_sizes, anchor=anchor, taproot=taproot) <= max_vsize:
        return None
    return DEFAULT_ARITY if len(leaf_sizes) > DEFAULT_ARITY else None
