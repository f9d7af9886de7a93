"""Share difficulty, channel targets and vardiff (sv2-spec 05-Mining-Protocol.md §5.2, §5.3.21
``SetTarget``).

A channel's target is always ``unit // D`` for an integer difficulty ``D``: a share meeting it
is credited exactly ``D`` (the accountant takes integer difficulties, docs/accounting.md), and
the target the miner is told is the one that is checked. ``unit`` is the target of difficulty
1: ``DIFF1_TARGET`` (``0xFFFF << 208``, Bitcoin's ``getdifficulty`` unit) on every network but
regtest, where it is regtest's ``powLimit`` (``0x7fffff << 232``, nBits ``0x207fffff``) so a CPU
can find shares: there difficulty 1 is about 2 hashes, as regtest blocks are. A share that
meets the job's own nBits is a block whatever its channel target.

Vardiff aims each channel at ``shares_per_minute``: after each ``retarget_interval`` seconds
(or as soon as twice the expected shares arrived) the difficulty becomes
``D × observed / expected``, at most ×4 or ÷4 per step, kept within ``[1, max_difficulty]`` and
below the miner's ``max_target``; changes under 10% are ignored (each one costs a SetTarget).
"""

from __future__ import annotations

from dataclasses import dataclass

from payouts.tx.block import DIFF1_TARGET

REGTEST_POW_LIMIT = 0x7FFFFF << 232
MAX_DIFFICULTY = 1 << 52  # the accountant's cap on one share's difficulty (invalid-difficulty)
MAX_TARGET = (1 << 256) - 1


def difficulty_unit(network: str) -> int:
    """The target of difficulty 1 on ``network`` (module docstring)."""
    return REGTEST_POW_LIMIT if network == "regtest" else DIFF1_TARGET


def target_of(difficulty: int, unit: int) -> int:
    """The channel target of integer ``difficulty``."""
    return unit // difficulty


def target_bytes(target: int) -> bytes:
    """U256 on the wire: little-endian (sv2-spec §3.1)."""
    return target.to_bytes(32, "little")


def target_from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def min_difficulty_for(max_target: int, unit: int) -> int:
    """The smallest integer difficulty whose target is at most ``max_target``."""
    if max_target <= 0:
        return MAX_DIFFICULTY + 1
    d = max(1, unit // max_target)
    while unit // d > max_target:
        d += 1
    return d


def difficulty_for_hashrate(
    hashrate: float, shares_per_minute: float, unit: int, default: int
) -> int:
    """The difficulty at which ``hashrate`` (H/s) finds ``shares_per_minute``; ``default`` when
    the miner gave no usable rate (0.0, a proxy with no devices yet, §5.3.2)."""
    if not hashrate > 0 or hashrate == float("inf"):
        return default
    hashes_per_share = hashrate * 60.0 / shares_per_minute
    hashes_per_diff1 = (1 << 256) / unit
    return max(1, min(MAX_DIFFICULTY, int(hashes_per_share / hashes_per_diff1)))


@dataclass(slots=True)
class Vardiff:
    """Per-channel difficulty controller (module docstring). ``now`` is seconds, any clock."""

    difficulty: int
    shares_per_minute: float
    min_difficulty: int = 1  # raised by the miner's max_target
    retarget_interval: float = 60.0
    window_start: float = 0.0
    shares: int = 0

    def on_share(self, now: float) -> int | None:
        """Count an accepted share; the new difficulty if it is time to change it."""
        self.shares += 1
        # Most shares change nothing: the interval has not passed and fewer than the early
        # count arrived (the same test retarget() starts with, without its arithmetic).
        if now - self.window_start < self.retarget_interval and (
            self.shares < 2 * self.shares_per_minute * self.retarget_interval / 60.0
        ):
            return None
        return self.retarget(now)

    def retarget(self, now: float) -> int | None:
        elapsed = now - self.window_start
        expected = self.shares_per_minute * elapsed / 60.0
        early = self.shares >= 2 * self.shares_per_minute * self.retarget_interval / 60.0
        if elapsed < self.retarget_interval and not (early and elapsed > 0):
            return None
        ratio = self.shares / expected if expected > 0 else 4.0
        ratio = min(4.0, max(0.25, ratio))
        new = int(self.difficulty * ratio)
        new = max(self.min_difficulty, 1, min(MAX_DIFFICULTY, new))
        self.window_start, self.shares = now, 0
        if abs(new - self.difficulty) * 10 < self.difficulty:
            return None
        self.difficulty = new
        return new


__all__ = [
    "MAX_DIFFICULTY",
    "MAX_TARGET",
    "REGTEST_POW_LIMIT",
    "Vardiff",
    "difficulty_for_hashrate",
    "difficulty_unit",
    "min_difficulty_for",
    "target_bytes",
    "target_from_bytes",
    "target_of",
]
