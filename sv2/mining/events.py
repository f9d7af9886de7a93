"""What a Mining session hands its driver besides messages (sans-I/O outputs)."""

from __future__ import annotations

from dataclasses import dataclass

from sv2.mining.jobs import MiningJob


@dataclass(slots=True)  # not frozen: made once per accepted share, its __init__ is hot
class AcceptedShare:
    """A share that met its channel's target: credit ``difficulty`` to ``account`` at the
    job's template revenue, then acknowledge it (SubmitShares.Success) once durable."""

    connection_id: int
    channel_id: int
    sequence_number: int
    account: str
    worker: str
    difficulty: int
    job_id: int
    revenue: int
    time_ms: int
    share_hash: bytes  # internal byte order; it names the share (its idempotency key)

    @property
    def key(self) -> str:
        """``mp:`` and the first 61 hex digits of the header hash in internal byte order (the
        hash's random end; a proof of work zeroes the other): 64 characters, the store's
        limit on a share key."""
        return "mp:" + self.share_hash.hex()[:61]


@dataclass(frozen=True, slots=True)
class BlockCandidate:
    """A share whose hash meets the job's nBits: the driver rebuilds and submits the block."""

    job: MiningJob
    extranonce: bytes
    version: int
    ntime: int
    nonce: int
    share_hash: bytes


__all__ = ["AcceptedShare", "BlockCandidate"]
