"""The distributions a pool has published, below the roles: the current one, the one before
it (the grace window of sv2-spec PR #203 §7.2) and every id ever published (to tell ``stale``
from ``unknown``). The JD server checks a declaration's ``distribution_id`` TLV against it and
the pool's SetCustomMiningJob check (:mod:`sv2.custom_job`) the declared job's.

``SetPayoutDistribution`` <-> :class:`~payouts.distribution.Distribution`: the amount fields of
``pool_payout`` and ``payouts`` carry *weights*; ``additional_outputs`` carry fixed satoshi
amounts (PR #203 as of 2026-09-09, the revision :mod:`sv2.messages.payouts` implements).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from payouts.distribution.fitting import FittedDistribution
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.modes import SettlementMode
from sv2.job_errors import INVALID_PAYOUT_DISTRIBUTION, STALE_PAYOUT_DISTRIBUTION, JobRejected


@dataclass(frozen=True, slots=True)
class Published:
    distribution: Distribution
    fitted: FittedDistribution | None
    mode: SettlementMode
    published_at: float
    after_settlement: bool  # PR #203 §10: no grace for what came before

    @property
    def distribution_id(self) -> int:
        return self.distribution.distribution_id


class DistributionBook:
    """The current distribution, the one before it (grace window, PR #203 §7.2) and the ids
    ever published (to tell ``stale`` from ``unknown``)."""

    MAX_REMEMBERED_IDS = 100_000

    def __init__(self, grace_period: float) -> None:
        if grace_period < 0:
            raise ValueError("grace period cannot be negative")
        self.grace_period = grace_period
        self.current: Published | None = None
        self.previous: Published | None = None
        self._seen: OrderedDict[int, None] = OrderedDict()

    def publish(self, p: Published) -> None:
        if self.current is not None and p.distribution_id <= self.current.distribution_id:
            raise ValidationError(
                f"distribution_id must increase strictly (PR #203 §3.1): {p.distribution_id} "
                f"after {self.current.distribution_id}"
            )
        self.previous, self.current = self.current, p
        self._seen[p.distribution_id] = None
        while len(self._seen) > self.MAX_REMEMBERED_IDS:
            self._seen.popitem(last=False)

    def lookup(self, distribution_id: int, now: float) -> Published:
        """The distribution a declaration names, if still accepted; else
        ``stale-payout-distribution`` (older than the grace window allows, or invalidated by a
        settlement) or ``invalid-payout-distribution`` (never published)."""
        cur = self.current
        if cur is not None and distribution_id == cur.distribution_id:
            return cur
        if distribution_id not in self._seen:
            raise JobRejected(
                INVALID_PAYOUT_DISTRIBUTION, f"distribution {distribution_id} was never published"
            )
        prev = self.previous
        if (
            cur is not None
            and prev is not None
            and distribution_id == prev.distribution_id
            and not cur.after_settlement
            and now - cur.published_at <= self.grace_period
        ):
            return prev
        raise JobRejected(
            STALE_PAYOUT_DISTRIBUTION,
            f"distribution {distribution_id} is no longer accepted"
            + (f" (current: {cur.distribution_id})" if cur else ""),
        )


__all__ = ["DistributionBook", "Published"]
