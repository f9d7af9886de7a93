"""Coinbase settlement speed: a coinbase with 500 payout outputs (target ≤ 5 ms), and the full
distribution step for 100,000 payees (target ≤ 100 ms, incl. the accountant's weights()),
against the naive baseline of rebuilding the window from scratch (bench_accounting)."""

from __future__ import annotations

import random
import statistics
import time

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.fitting import Budget, Candidate, fit_distribution
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.settlement.coinbase import build_coinbase_settlement
from payouts.tx.coinbase import witness_commitment, witness_commitment_output

POOL = bytes.fromhex("0014") + b"\x01" * 20


def p2tr(i: int) -> bytes:
    return b"\x51\x20" + i.to_bytes(32, "big")


def median_ms(fn: object, runs: int) -> float:
    xs = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        xs.append((time.perf_counter() - t) * 1000)
    return statistics.median(xs)


def main() -> None:
    payees = tuple(Payee(p2tr(i), 1_000 + i, 330) for i in range(500))
    dist = Distribution(1, PoolPayout(POOL, 10_000), payees)
    template = [witness_commitment_output(witness_commitment([]))]
    ms = median_ms(lambda: build_coinbase_settlement(dist, 312_500_000, height=900_000,
                                                     template_outputs=template), 50)
    print(f"coinbase with 500 payout outputs (amounts + serialization): median {ms:.2f} ms "
          f"(target <= 5 ms: {'OK' if ms <= 5 else 'MISSED'})")

    rng = random.Random(1)
    n = 100_000
    cands = [Candidate(f"m{i}", p2tr(i), rng.randint(2**40, 2**80)) for i in range(n)]
    budget = Budget(n * 43 + 1_000, 400)
    fit = median_ms(lambda: fit_distribution(1, POOL, cands, fee_bps=200, budget=budget,
                                             estimated_revenue=312_500_000), 3)
    fitted = fit_distribution(1, POOL, cands, fee_bps=200, budget=budget,
                              estimated_revenue=312_500_000)
    amounts = median_ms(lambda: compute_outputs(fitted.distribution, 312_500_000), 3)
    print(f"distribution for {len(fitted.distribution.payouts):,} payees: fit {fit:.0f} ms + "
          f"amounts {amounts:.0f} ms (+ weights() from bench_accounting); target <= 100 ms in "
          f"all: {'OK' if fit + amounts <= 100 else 'MISSED'}")


if __name__ == "__main__":
    main()
