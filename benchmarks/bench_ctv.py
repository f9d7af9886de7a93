"""CTV fan-out benchmark: build time for 100,000 payees, and bytes per payee by tree shape.

Run: ``.venv/bin/python benchmarks/bench_ctv.py``. Prints Markdown.

1. ``build_ctv_fanout`` for 100,000 P2TR payees (default params: bare commitments, 0-value P2A
   anchors, 0 fee, auto arity): amounts, shape, every BIP-119 hash and every txid. Best of 3.
2. For N = 100 … 100,000 P2TR payees (+ the pool payout, also P2TR here): total vbytes of the
   fully unrolled tree per payee, against the floor of one P2TR output (43 vB), and the worst
   payee's unilateral exit cost (the vbytes of every tx on its path), for a flat fan-out and
   k ∈ {4, 8, 16, 64}. Sizes come from the same shape code the builder uses (a test checks
   they equal the built txs), so non-standard shapes (a flat tx over 100 kvB) can be shown.
"""

from __future__ import annotations

import time

from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.settlement.ctv import CtvParams, build_ctv_fanout
from payouts.settlement.ctv_shape import build_shape, shape_vsizes

P2TR_OUTPUT = 43
NS = (100, 1_000, 10_000, 100_000)
ARITIES: tuple[int | None, ...] = (None, 4, 8, 16, 64)


def p2tr(i: int) -> bytes:
    return b"\x51\x20" + i.to_bytes(32, "big")


def distribution(n: int) -> Distribution:
    payees = tuple(Payee(p2tr(i + 1), 1_000 + i % 97, 330) for i in range(n))
    return Distribution(1, PoolPayout(p2tr(0), 100_000), payees)


def time_build(n: int = 100_000, repeat: int = 3) -> tuple[float, float, int, int]:
    """(best wall seconds, best CPU seconds, txs, depth) for building the tree of ``n``."""
    dist = distribution(n)
    best_wall = best_cpu = float("inf")
    txs = depth = 0
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        f = build_ctv_fanout(dist, 312_500_000, CtvParams())
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
        txs, depth = len(f.txs), f.depth
    return best_wall, best_cpu, txs, depth


def shape_stats(
    n: int, arity: int | None, *, taproot: bool = False, anchor: bool = True
) -> tuple[int, int, int, int, int]:
    """(total vB, worst exit vB, txs, depth, largest tx vB) for n P2TR payees + a P2TR pool."""
    leaves = n + 1
    shape = build_shape(leaves, arity)
    vsizes = shape_vsizes(shape, [P2TR_OUTPUT] * leaves, anchor=anchor, taproot=taproot)
    exit_cost: list[int] = []
    for node in shape.nodes:
        parent = 0 if node.parent is None else exit_cost[node.parent]
        exit_cost.append(parent + vsizes[node.index])
    worst = max(exit_cost[i] for i, _ in shape.leaf_positions())
    return sum(vsizes), worst, len(shape.nodes), shape.depth, max(vsizes)


def table(*, taproot: bool) -> str:
    rows = [
        "| N | shape | vB/payee | × floor | worst exit vB | txs | depth | largest tx vB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in NS:
        for k in ARITIES:
            total, worst, txs, depth, largest = shape_stats(n, k, taproot=taproot)
            note = ""
            if largest * 4 > 400_000:
                note = " (non-standard)"
            elif largest > 10_000:
                note = " (v2 only)"
            name = "flat" if k is None else f"k={k}"
            rows.append(
                f"| {n:,} | {name}{note} | {total / n:.2f} | {total / n / P2TR_OUTPUT:.3f} | "
                f"{worst:,} | {txs:,} | {depth} | {largest:,} |"
            )
    return "\n".join(rows)


def main() -> None:
    wall, cpu, txs, depth = time_build()
    print("## CTV fan-out benchmark\n")
    print(
        f"Build + hash, 100,000 P2TR payees (default params, k=16 tree): best of 3 "
        f"**{wall:.3f} s** wall, {cpu:.3f} s CPU; {txs:,} txs, depth {depth}.\n"
    )
    print(
        "Per-payee cost of the fully unrolled tree (P2TR payees, floor = one 43 vB P2TR "
        "output), bare CTV commitments, one P2A anchor per tx:\n"
    )
    print(table(taproot=False))
    print("\nSame with taproot (NUMS + CTV leaf) commitments (+18 vB per tx):\n")
    print(table(taproot=True))


if __name__ == "__main__":
    main()
