"""Share events in columnar form.

A share's weight comes from its *target* difficulty (the difficulty the pool assigned), never its
achieved difficulty, and, with value weighting on, from the revenue of the template it was mined
on. Times are unix milliseconds. ``miner_id`` is the registered account id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ShareBatch:
    """One batch of share events, column by column (all columns have the same length)."""

    key: Sequence[str]  # idempotency key, unique pool-wide
    miner_id: I64  # registered miner account id
    worker: Sequence[str]
    difficulty: I64  # target difficulty, integer >= 1
    job_id: Sequence[str]
    revenue: I64  # template revenue of the job, satoshis
    time_ms: I64  # unix time, milliseconds

    def __len__(self) -> int:
        return len(self.key)

    @classmethod
    def from_rows(
        cls, rows: Sequence[tuple[str, int, str, int, str, int, int]]
    ) -> ShareBatch:
        """Build from (key, miner_id, worker, difficulty, job_id, revenue, time_ms) tuples."""
        return cls(
            key=[r[0] for r in rows],
            miner_id=np.array([r[1] for r in rows], dtype=np.int64),
            worker=[r[2] for r in rows],
            difficulty=np.array([r[3] for r in rows], dtype=np.int64),
            job_id=[r[4] for r in rows],
            revenue=np.array([r[5] for r in rows], dtype=np.int64),
            time_ms=np.array([r[6] for r in rows], dtype=np.int64),
        )

    def take(self, index: npt.NDArray[np.intp]) -> ShareBatch:
        """The rows at ``index`` (e.g. only the ones a store reported as new)."""
        idx = index.tolist()
        return ShareBatch(
            key=[self.key[i] for i in idx],
            miner_id=self.miner_id[index],
            worker=[self.worker[i] for i in idx],
            difficulty=self.difficulty[index],
            job_id=[self.job_id[i] for i in idx],
            revenue=self.revenue[index],
            time_ms=self.time_ms[index],
        )
