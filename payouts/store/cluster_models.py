"""Store models of a pool run as several processes with one elected leader (docs/deployment.md).

- ``leader_lease`` (one row): the fencing epoch, bumped by every process that becomes leader
  (:mod:`payouts.store.leader_lease`), who holds it and since when. Every write of the leader
  checks the epoch first, so a leader that lost its lock cannot write.
- ``found_blocks``: blocks any frontend's JD server (or mining endpoint) got accepted, queued
  for the leader, which alone records them (unique hash: whichever path reports first wins).
- ``window_view`` (one row): the window view the leader publishes (exact JSON, zlib); the
  frontends answer ``GET /v1/window`` and the miner pages from it.
- ``leader_requests``: what a frontend was asked that only the leader may do (publish a
  distribution, broadcast or fall back a settlement), with the leader's answer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from payouts.store.models import Base, BigIntPK, UTCDateTime, _now_column

HOLDER_MAX = 200
REQUEST_KINDS = ("publish", "broadcast", "fallback")


class LeaderLease(Base):
    __tablename__ = "leader_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(HOLDER_MAX))
    since: Mapped[datetime] = _now_column()

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


class FoundBlock(Base):
    __tablename__ = "found_blocks"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _now_column()
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WindowViewRow(Base):
    __tablename__ = "window_view"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    published_at: Mapped[datetime] = _now_column()

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


class LeaderRequest(Base):
    __tablename__ = "leader_requests"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _now_column()
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint("kind IN ('publish', 'broadcast', 'fallback')", name="known_kind"),
    )
