"""Share events in columnar form.

A share's weight comes from its *target* difficulty (the difficulty the pool assigned), never its
achieved difficulty, and, with value weighting on, from the revenue of the template it was mined
on. Times are unix milliseconds. ``miner_id`` is the registered account id;
:class:`AccountShareBatch` is the form pool software sends (miners named by account), which the
service resolves into a :class:`ShareBatch`. The field limits below are the store's column widths
and the API's request limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

ACCOUNT_MAX = 64  # characters of a miner account name
KEY_MAX = 64  # characters of a share's idempotency key
WORKER_MAX = 128
JOB_ID_MAX = 64


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

    @classmethod
    def concat(cls, batches: Sequence[ShareBatch]) -> ShareBatch:
        """The rows of ``batches``, one after another."""
        return cls(
            key=[k for b in batches for k in b.key],
            miner_id=np.concatenate([np.asarray(b.miner_id, dtype=np.int64) for b in batches]),
            worker=[w for b in batches for w in b.worker],
            difficulty=np.concatenate([np.asarray(b.difficulty, dtype=np.int64)
                                       for b in batches]),
            job_id=[j for b in batches for j in b.job_id],
            revenue=np.concatenate([np.asarray(b.revenue, dtype=np.int64) for b in batches]),
            time_ms=np.concatenate([np.asarray(b.time_ms, dtype=np.int64) for b in batches]),
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


@dataclass(frozen=True, slots=True)
class AccountShareBatch:
    """A share batch as pool software sends it (``POST /v1/shares``): columns of plain values,
    miners named by ``account``. :meth:`payouts.service.PoolService.ingest_accounts` checks it
    with :mod:`payouts.accounting.validate` and resolves it into a :class:`ShareBatch`."""

    key: Sequence[str]
    account: Sequence[str]
    worker: Sequence[str]
    difficulty: Sequence[int]
    job_id: Sequence[str]
    revenue: Sequence[int]
    time_ms: Sequence[int]

    def __len__(self) -> int:
        return len(self.key)

    def columns(self) -> dict[str, Sequence[object]]:
        """Every column but ``key``, in wire order (the order their lengths are checked)."""
        return {"account": self.account, "worker": self.worker, "difficulty": self.difficulty,
                "job_id": self.job_id, "revenue": self.revenue, "time_ms": self.time_ms}
