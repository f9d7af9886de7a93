"""What every miner is owed, as two sorted columns: the service's in-memory copy of the ledger's
balances (``miner_balances`` plus the ledger backlog), for the paths that read them all at once.

A 100k-miner block moves 100k balances; as a dict that was a copy and 100k Python updates per
block (issue #11). As columns, applying a block is one sort-merge and looking up the window's
miners one ``searchsorted``. Amounts are int64: a balance is bounded by the money supply
(2.1e15 sat), far inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


class OwedTable:
    """Miner ids (ascending, unique) and what each is owed (immutable: :meth:`plus` makes a
    new table, so readers never see one half-applied)."""

    __slots__ = ("ids", "owed")

    def __init__(self, ids: I64, owed: I64) -> None:
        self.ids, self.owed = ids, owed

    @classmethod
    def of(cls, balances: Mapping[int, int]) -> OwedTable:
        ids = np.fromiter(balances.keys(), dtype=np.int64, count=len(balances))
        owed = np.fromiter(balances.values(), dtype=np.int64, count=len(balances))
        order = np.argsort(ids)
        return cls(ids[order], owed[order])

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, miner_ids: Sequence[int] | I64) -> I64:
        """What each of ``miner_ids`` is owed (0 for a miner with no balance)."""
        want = np.asarray(miner_ids, dtype=np.int64)
        if not len(self.ids) or not len(want):
            return np.zeros(len(want), dtype=np.int64)
        at = np.searchsorted(self.ids, want)
        at_c = np.minimum(at, len(self.ids) - 1)
        found = self.ids[at_c] == want
        return np.where(found, self.owed[at_c], 0)

    def positive(self) -> tuple[I64, I64]:
        """(ids, owed) of the miners owed something."""
        keep = self.owed > 0
        return self.ids[keep], self.owed[keep]

    def plus(self, miner_ids: Sequence[int] | I64, amounts: Sequence[int] | I64) -> OwedTable:
        """This table moved by ``amounts`` (miners may repeat, and may be new)."""
        ids = np.concatenate([self.ids, np.asarray(miner_ids, dtype=np.int64)])
        owed = np.concatenate([self.owed, np.asarray(amounts, dtype=np.int64)])
        unique, inverse = np.unique(ids, return_inverse=True)
        total = np.zeros(len(unique), dtype=np.int64)
        np.add.at(total, inverse, owed)
        return OwedTable(unique, total)

    def as_dict(self) -> dict[int, int]:
        return dict(zip(self.ids.tolist(), self.owed.tolist(), strict=True))


__all__ = ["OwedTable"]
