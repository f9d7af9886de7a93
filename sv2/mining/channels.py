"""Channels and extranonce prefixes (sv2-spec 05-Mining-Protocol.md §5.1.2.1, §5.2).

Every channel on the server gets an ``extranonce_prefix`` no other open channel has, so no two
miners ever search the same space (§5.1: "Mining servers MUST assign a unique subset of the
search space to each mining device"). Prefixes are ``prefix_size`` bytes from one counter
shared by every connection; a closed channel's prefix is reused only after the counter ran
through the whole space, and when every prefix is held opening a channel is refused
(``extranonce-space-exhausted``) rather than wrapping onto a live one. A standard channel's
prefix is padded with zeros to the whole extranonce (it rolls none, §5.2.1); an extended
channel's miner rolls ``extranonce_size`` bytes after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sv2.mining.jobs import MiningJob
from sv2.mining.targets import Vardiff


class ExtranonceSpaceExhausted(Exception):
    """Every prefix of the configured size is held by an open channel."""


class ExtranonceAllocator:
    """Unique prefixes of ``size`` bytes across the server (module docstring)."""

    def __init__(self, size: int) -> None:
        if not 1 <= size <= 16:
            raise ValueError("extranonce prefix size must be 1..16 bytes")
        self.size = size
        self.capacity = 1 << (8 * size)
        self._next = 0
        self._held: set[int] = set()

    def __len__(self) -> int:
        return len(self._held)

    def allocate(self) -> bytes:
        if len(self._held) >= self.capacity:
            raise ExtranonceSpaceExhausted(f"all {self.capacity} extranonce prefixes are in use")
        while self._next in self._held:
            self._next = (self._next + 1) % self.capacity
        value = self._next
        self._held.add(value)
        self._next = (value + 1) % self.capacity
        return value.to_bytes(self.size, "big")

    def release(self, prefix: bytes) -> None:
        self._held.discard(int.from_bytes(prefix[: self.size], "big"))


@dataclass(slots=True)
class Channel:
    """One open standard or extended channel (§5.2.1, §5.2.2) on one connection."""

    channel_id: int
    user_identity: str
    extended: bool
    extranonce_prefix: bytes  # what the miner does not roll (standard: the whole extranonce)
    allocated_prefix: bytes  # the allocator's part of it
    extranonce_size: int  # what the miner rolls (0 on a standard channel)
    difficulty: int
    target: int
    max_target: int
    vardiff: Vardiff
    jobs: dict[int, MiningJob] = field(default_factory=dict)
    active_job: int | None = None  # the pool job SetNewPrevHash activated
    last_sequence: int = 0
    accepted: int = 0
    rejected: int = 0
    worker: str = ""  # what its shares are credited under: "connection/channel"


__all__ = ["Channel", "ExtranonceAllocator", "ExtranonceSpaceExhausted"]
