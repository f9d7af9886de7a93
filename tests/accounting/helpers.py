"""Helpers for the accounting tests: batch builder, naive from-scratch reference model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count

import numpy as np

from payouts.accounting.shares import ShareBatch

_keys = count()


def batch(rows: Sequence[tuple[int, int, int]], t0: int = 0) -> ShareBatch:
    """A batch from (miner_id, difficulty, revenue) rows, with fresh unique keys."""
    n = len(rows)
    return ShareBatch(
        key=[f"k{next(_keys)}" for _ in range(n)],
        miner_id=np.array([r[0] for r in rows], dtype=np.int64),
        worker=["w"] * n,
        difficulty=np.array([r[1] for r in rows], dtype=np.int64),
        job_id=["j"] * n,
        revenue=np.array([r[2] for r in rows], dtype=np.int64),
        time_ms=np.arange(t0, t0 + n, dtype=np.int64),
    )


@dataclass
class NaiveModel:
    """Replays the same events as an Accountant and recomputes everything from scratch."""

    scheme: str
    k: int = 8
    n: int = 1_000_000
    value_weighting: bool = True
    network_difficulty: int = 1
    rows: list[tuple[int, int, int]] = field(default_factory=list)  # (miner, d, revenue)
    round_start: int = 0

    def block_found(self) -> None:
        self.round_start = len(self.rows)

    def start(self) -> int:
        if self.scheme == "pplns":
            return max(0, len(self.rows) - self.n)
        if self.scheme == "prop":
            return self.round_start
        target = self.k * self.network_difficulty
        start, acc = len(self.rows), 0
        while start > 0 and acc < target:
            start -= 1
            acc += self.rows[start][1]
        return start

    def weights(self) -> tuple[list[int], list[int]]:
        w: dict[int, int] = {}
        for miner, d, r in self.rows[self.start() :]:
            w[miner] = w.get(miner, 0) + (d * r if self.value_weighting else d)
        ids = sorted(m for m, v in w.items() if v)
        return ids, [w[m] for m in ids]
