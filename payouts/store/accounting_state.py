"""Reading and writing the durable accounting state (:mod:`payouts.store.accounting_models`):
chain events, snapshots, and the hot share columns a restart replays.

Events are appended in the same transaction as what caused them (a found block's ``round``
event with the block and its ledger lines: :func:`payouts.store.ledger.record_block`), so no
crash can leave one without the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, delete, func, insert, select

from payouts.errors import ValidationError
from payouts.store._common import raw_cursor, write_connection
from payouts.store.accounting_models import EVENT_KINDS, AccountingEvent, AccountingSnapshot
from payouts.store.models import Share

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored chain event: ``kind`` ``difficulty`` (``bits`` set) or ``round`` (a block the
    pool found, ``block_id``), placed after the share ``after_share_id``."""

    id: int
    kind: str
    after_share_id: int
    bits: int | None
    block_id: int | None


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    id: int
    version: int
    after_share_id: int
    after_event_id: int
    settings_key: str
    checksum: str
    body: bytes

    @property
    def intact(self) -> bool:
        """The body is the one that was written (its SHA-256 matches)."""
        return hashlib.sha256(self.body).hexdigest() == self.checksum


def insert_event(conn: Connection, kind: str, after_share_id: int, *, bits: int | None = None,
                 block_id: int | None = None) -> int:
    """Append an event in the caller's transaction; its id."""
    if kind not in EVENT_KINDS:
        raise ValidationError(f"unknown accounting event {kind!r}")
    if (kind == "difficulty") != (bits is not None):
        raise ValidationError("a difficulty event carries bits, a round event none")
    return int(conn.execute(
        insert(AccountingEvent)
        .values(kind=kind, after_share_id=after_share_id, bits=bits, block_id=block_id)
        .returning(AccountingEvent.id)
    ).scalar_one())


def record_event(engine: Engine, kind: str, after_share_id: int, *, bits: int | None = None,
                 block_id: int | None = None) -> int:
    """:func:`insert_event` in a transaction of its own."""
    with write_connection(engine) as conn, conn.begin():
        return insert_event(conn, kind, after_share_id, bits=bits, block_id=block_id)


def load_events(engine: Engine, after_event_id: int = 0) -> list[EventRecord]:
    """Events with ``id > after_event_id``, in id order."""
    q = (select(AccountingEvent.id, AccountingEvent.kind, AccountingEvent.after_share_id,
                AccountingEvent.bits, AccountingEvent.block_id)
         .where(AccountingEvent.id > after_event_id).order_by(AccountingEvent.id))
    with engine.connect() as conn:
        return [EventRecord(int(r.id), r.kind, int(r.after_share_id),
                            None if r.bits is None else int(r.bits), r.block_id)
                for r in conn.execute(q)]


def last_difficulty_event(engine: Engine) -> EventRecord | None:
    """The newest ``difficulty`` event (what D the window used last), or None."""
    q = (select(AccountingEvent.id, AccountingEvent.kind, AccountingEvent.after_share_id,
                AccountingEvent.bits, AccountingEvent.block_id)
         .where(AccountingEvent.kind == "difficulty")
         .order_by(AccountingEvent.id.desc()).limit(1))
    with engine.connect() as conn:
        r = conn.execute(q).first()
    if r is None:
        return None
    return EventRecord(int(r.id), r.kind, int(r.after_share_id), r.bits, r.block_id)


def max_share_id(conn: Connection) -> int:
    """The newest stored share's id (0 with none): the position of an event taken now, when
    the caller holds the only writer of shares (the service lock)."""
    return int(conn.execute(select(func.coalesce(func.max(Share.id), 0))).scalar_one())


def save_snapshot(engine: Engine, *, version: int, after_share_id: int, after_event_id: int,
                  settings_key: str, body: bytes, keep: int = 2) -> int:
    """Store a snapshot and delete all but the newest ``keep``; its id."""
    checksum = hashlib.sha256(body).hexdigest()
    with write_connection(engine) as conn, conn.begin():
        sid = int(conn.execute(
            insert(AccountingSnapshot).values(
                version=version, after_share_id=after_share_id, after_event_id=after_event_id,
                settings_key=settings_key, checksum=checksum, body=body)
            .returning(AccountingSnapshot.id)
        ).scalar_one())
        keep_ids = select(AccountingSnapshot.id).order_by(
            AccountingSnapshot.id.desc()).limit(keep).scalar_subquery()
        conn.execute(delete(AccountingSnapshot).where(AccountingSnapshot.id.not_in(keep_ids)))
    return sid


def load_latest_snapshot(engine: Engine) -> SnapshotRecord | None:
    """The newest snapshot, or None. Read through the driver: the body may be tens of MB and
    every copy of it counts against a restart's memory."""
    with engine.connect() as conn:
        cur = raw_cursor(conn)
        try:
            cur.execute("SELECT id, version, after_share_id, after_event_id, settings_key, "
                        "checksum, body FROM accounting_snapshots ORDER BY id DESC LIMIT 1")
            r = cur.fetchone()
        finally:
            cur.close()
    if r is None:
        return None
    body = r[6] if isinstance(r[6], bytes) else bytes(r[6])
    return SnapshotRecord(int(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], r[5], body)


@dataclass(frozen=True, slots=True)
class HotShares:
    """The columns of stored shares the accountant keeps (id order)."""

    share_id: I64
    miner_id: I64
    difficulty: I64
    revenue: I64
    time_ms: I64

    def __len__(self) -> int:
        return len(self.share_id)


def iter_hot_shares(engine: Engine, after_id: int = 0, upto_id: int | None = None,
                    chunk: int = 250_000) -> Iterator[HotShares]:
    """Shares with ``after_id < id <= upto_id`` (no upper bound with None), in id order, as
    int64 columns only: no key, worker or job strings are read (a restart's replay)."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    last = after_id
    top = (1 << 63) - 1 if upto_id is None else upto_id
    while last < top:
        with engine.connect() as conn:
            pg = conn.dialect.name == "postgresql"
            ph = "%s" if pg else "?"
            cur = raw_cursor(conn)
            try:
                cur.execute(
                    "SELECT id, miner_id, difficulty, revenue, time_ms FROM shares "
                    f"WHERE id > {ph} AND id <= {ph} ORDER BY id LIMIT {ph}",
                    (last, top, chunk))
                rows = cur.fetchall()
            finally:
                cur.close()
        if not rows:
            return
        a = np.array(rows, dtype=np.int64).reshape(len(rows), 5)
        yield HotShares(a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(),
                        a[:, 4].copy())
        last = int(a[-1, 0])
        if len(rows) < chunk:
            return


__all__ = [
    "EventRecord",
    "HotShares",
    "SnapshotRecord",
    "insert_event",
    "iter_hot_shares",
    "last_difficulty_event",
    "load_events",
    "load_latest_snapshot",
    "max_share_id",
    "record_event",
    "save_snapshot",
]
