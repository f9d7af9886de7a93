"""What every Mining Protocol connection of one server shares (sans-I/O, no sockets): the
extranonce prefixes, the custom-job check against the JD server's declarations, the pool's
current job, the chain tip shares are judged against, the policy and the counters.

The JD server's side comes in through :class:`~sv2.custom_job.DeclaredJobs` (its
``declared_job``, ``book`` and ``clock``), the protocol of the check below both roles, so this
package imports nothing of :mod:`sv2.jds`.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from payouts.tx.consensus import MAX_FUTURE_BLOCK_TIME
from sv2.custom_job import CustomJobChecker, DeclaredJobs
from sv2.declared_job import DeclaredJob
from sv2.mining.channels import ExtranonceAllocator
from sv2.mining.jobs import JobParts
from sv2.mining.targets import REGTEST_POW_LIMIT


@dataclass(frozen=True, slots=True)
class MiningPolicy:
    """The ``[mining]`` knobs a session applies (docs/settings.md)."""

    shares_per_minute: float = 6.0
    initial_difficulty: int = 1
    retarget_interval: float = 60.0
    extranonce_prefix_size: int = 4
    extranonce_size: int = 4  # what an extended channel's miner rolls
    max_channels_per_connection: int = 1_000
    difficulty_unit: int = REGTEST_POW_LIMIT
    max_ntime_ahead: int = MAX_FUTURE_BLOCK_TIME
    jobs_per_channel: int = 16  # kept to tell stale-share from invalid-job-id


@dataclass(slots=True)
class MiningShared:
    """State of one Mining Protocol server, shared by its sessions (module docstring)."""

    policy: MiningPolicy
    known_user: Callable[[str], bool]
    jds: DeclaredJobs | None = None
    supported_extensions: tuple[int, ...] = ()
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    stats: dict[str, int] = field(default_factory=dict)
    allocator: ExtranonceAllocator = field(init=False)
    checker: CustomJobChecker | None = field(init=False)
    pool_job: DeclaredJob | None = None  # the job non-declaring miners get, on the pool's template
    pool_job_time: int = 0  # its min_ntime: the template's header time
    tip: bytes | None = None  # the chain tip shares must build on (None: not known yet)
    stale_tips: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    job_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _parts: OrderedDict[int, tuple[DeclaredJob, JobParts]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.allocator = ExtranonceAllocator(self.policy.extranonce_prefix_size)
        self.checker = CustomJobChecker(self.jds) if self.jds is not None else None

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def set_tip(self, tip: bytes) -> bool:
        """The chain moved to ``tip``: jobs on earlier tips become stale. A job on a tip this
        server has not seen yet (a JD client's node was faster) is not stale."""
        if tip == self.tip:
            return False
        if self.tip is not None:
            self.stale_tips[self.tip] = None
            while len(self.stale_tips) > 64:
                self.stale_tips.popitem(last=False)
        self.stale_tips.pop(tip, None)
        self.tip = tip
        return True

    def is_stale(self, prev_hash: bytes) -> bool:
        return prev_hash in self.stale_tips

    def parts(self, declared: DeclaredJob) -> JobParts:
        """The parts of ``declared`` every channel's job shares, computed once (the entry
        holds the job, so its ``id`` stays its own while cached)."""
        hit = self._parts.get(id(declared))
        if hit is not None and hit[0] is declared:
            return hit[1]
        parts = JobParts.of(declared)
        self._parts[id(declared)] = (declared, parts)
        while len(self._parts) > 64:
            self._parts.popitem(last=False)
        return parts

    def next_job_id(self) -> int:
        return next(self.job_ids) & 0xFFFFFFFF


__all__ = ["MAX_FUTURE_BLOCK_TIME", "MiningPolicy", "MiningShared"]
