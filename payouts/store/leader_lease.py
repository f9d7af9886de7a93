"""The leader's lease on PostgreSQL: an advisory lock that elects, an epoch that fences.

Election: the session advisory lock ``(LEADER_LOCK, hashtext(current_schema()))`` (two-key
form: pools in separate schemas of one database, like the tests, do not collide). PostgreSQL
holds it for as long as the session that took it lives, so a leader whose process dies or whose
connection PostgreSQL drops (a partition, ``pg_terminate_backend``) loses it at once.

Fencing: a lock alone cannot stop a leader that lost it without noticing (stopped, partitioned)
from writing afterwards. So whoever takes the lock bumps ``leader_lease.epoch`` (one row) and
writes only through an engine fenced with that epoch (:class:`Fence`): every transaction first
reads the epoch ``FOR SHARE`` and raises :class:`StaleLeaderError` if it moved on. The new
leader's bump (an ``UPDATE`` of that row) thus waits for every fenced transaction still in
flight, and every transaction the old leader begins afterwards is refused.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, event, text

from payouts.errors import PayoutsError

# Two-key advisory lock: (LEADER_LOCK, hashtext(current_schema())). 'pyld' as an int4.
LEADER_LOCK = 0x70796C64
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))"
BUMP_SQL = ("UPDATE leader_lease SET epoch = epoch + 1, holder = %s, since = CURRENT_TIMESTAMP "
            "WHERE id = 1 RETURNING epoch")
_FENCE_SQL = text("SELECT epoch FROM leader_lease WHERE id = 1 FOR SHARE")
_FENCE_INFO = "payouts_fence_epoch"


class StaleLeaderError(PayoutsError):
    """This process was leader under ``epoch``; another has been elected since: it may not
    write (its lock was lost: a partition, a stop, a killed connection)."""

    code = "stale-leader"


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease row: the current epoch, who took it and when (``payouts cluster status``)."""

    epoch: int
    holder: str
    since: datetime | None


def holder_name(port: int | None = None) -> str:
    """``host:pid[:port]``: who holds the lease, as ``payouts cluster status`` shows it."""
    import os

    name = f"{socket.gethostname()}:{os.getpid()}"
    return name if port is None else f"{name}:{port}"


def read_lease(engine: Engine) -> Lease:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT epoch, holder, since FROM leader_lease WHERE id = 1")).one()
    since = row[2]
    if isinstance(since, str):  # SQLite keeps text
        since = datetime.fromisoformat(since)
    return Lease(int(row[0]), str(row[1]), since)


def try_acquire(raw_conn: Any, holder: str) -> int | None:
    """On ``raw_conn`` (a psycopg connection in autocommit mode that lives as long as the
    leadership): try the lock; if taken, bump the epoch and return it (None: someone else
    leads). The bump waits for the old leader's fenced transactions still in flight."""
    with raw_conn.cursor() as cur:
        cur.execute(TRY_LOCK_SQL, (LEADER_LOCK,))
        if not cur.fetchone()[0]:
            return None
        cur.execute(BUMP_SQL, (holder,))
        return int(cur.fetchone()[0])


class Fence:
    """Fence every transaction on ``engine`` with ``epoch`` (module docstring). ``remove()``
    takes the hook off again (the engine is then the leader's no more: dispose it)."""

    def __init__(self, engine: Engine, epoch: int) -> None:
        self.engine = engine
        self.epoch = epoch
        event.listen(engine, "begin", self._check)

    def _check(self, conn: Connection) -> None:
        current = conn.exec_driver_sql(str(_FENCE_SQL)).scalar_one()
        if current != self.epoch:
            raise StaleLeaderError(
                f"leader epoch {self.epoch} is over: epoch {current} was elected since; this "
                "process may not write", epoch=self.epoch, current=int(current))

    def remove(self) -> None:
        if event.contains(self.engine, "begin", self._check):
            event.remove(self.engine, "begin", self._check)


__all__ = ["LEADER_LOCK", "Fence", "Lease", "StaleLeaderError", "holder_name", "read_lease",
           "try_acquire"]
