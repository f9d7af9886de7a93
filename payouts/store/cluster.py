"""What the processes of one pool hand each other through the store (cluster_models):
the found-block queue, the published window view, and the requests forwarded to the leader.

Each write commits with a NOTIFY on its channel (:mod:`payouts.store.notify`), so whoever
waits for it wakes up at once; the readers poll too, so a lost notification only delays.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from payouts.errors import ValidationError
from payouts.store import notify
from payouts.store.cluster_models import REQUEST_KINDS

# -- found blocks -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QueuedBlock:
    id: int
    block_hash: bytes
    payload: dict[str, Any]


def queue_found_block(engine: Engine, block_hash: bytes, payload: dict[str, Any]) -> bool:
    """Queue a found block for the leader; False when it is queued already (whichever
    process reports a block first wins; ARCHITECTURE invariant 8)."""
    body = json.dumps(payload, sort_keys=True)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            sql = ("INSERT INTO found_blocks (block_hash, payload) VALUES (:h, :p) "
                   "ON CONFLICT (block_hash) DO NOTHING")
        else:
            sql = "INSERT OR IGNORE INTO found_blocks (block_hash, payload) VALUES (:h, :p)"
        new = conn.execute(text(sql), {"h": block_hash, "p": body}).rowcount == 1
        if new:
            notify.notify(conn, notify.FOUND_BLOCK, block_hash.hex())
    return new


def pending_found_blocks(engine: Engine) -> list[QueuedBlock]:
    """Queued blocks the leader has not recorded yet, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, block_hash, payload FROM found_blocks WHERE recorded_at IS NULL "
            "ORDER BY id")).all()
    return [QueuedBlock(int(r[0]), bytes(r[1]), json.loads(r[2])) for r in rows]


def mark_found_block_recorded(engine: Engine, queued_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE found_blocks SET recorded_at = CURRENT_TIMESTAMP "
                          "WHERE id = :i"), {"i": queued_id})


# -- the window view --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PublishedView:
    version: int
    epoch: int
    body: dict[str, Any]


def publish_view(engine: Engine, epoch: int, body: dict[str, Any]) -> int:
    """Store the window view (exact JSON, zlib) as the next version; returns it."""
    blob = zlib.compress(json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), 6)
    with engine.begin() as conn:
        version = int(conn.execute(text(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM window_view")).scalar_one())
        updated = conn.execute(text(
            "UPDATE window_view SET version = :v, epoch = :e, body = :b, "
            "published_at = CURRENT_TIMESTAMP WHERE id = 1"),
            {"v": version, "e": epoch, "b": blob}).rowcount
        if not updated:
            conn.execute(text("INSERT INTO window_view (id, version, epoch, body) "
                              "VALUES (1, :v, :e, :b)"), {"v": version, "e": epoch, "b": blob})
    return version


def read_view(engine: Engine, newer_than: int = 0) -> PublishedView | None:
    """The published view (None before the first, or when its version is not above
    ``newer_than``: the caller's copy is current)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT version, epoch, body FROM window_view WHERE id = 1 "
                                "AND version > :n"), {"n": newer_than}).one_or_none()
    if row is None:
        return None
    return PublishedView(int(row[0]), int(row[1]), json.loads(zlib.decompress(bytes(row[2]))))


# -- requests forwarded to the leader ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LeaderRequest:
    id: int
    kind: str
    body: dict[str, Any]


def submit_request(engine: Engine, kind: str, body: dict[str, Any]) -> int:
    if kind not in REQUEST_KINDS:
        raise ValidationError(f"unknown leader request kind {kind!r}")
    with engine.begin() as conn:
        rid = int(conn.execute(text(
            "INSERT INTO leader_requests (kind, body) VALUES (:k, :b) RETURNING id"),
            {"k": kind, "b": json.dumps(body)}).scalar_one())
        notify.notify(conn, notify.REQUEST, str(rid))
    return rid


def open_requests(engine: Engine) -> list[LeaderRequest]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind, body FROM leader_requests "
                                 "WHERE answered_at IS NULL ORDER BY id")).all()
    return [LeaderRequest(int(r[0]), str(r[1]), json.loads(r[2])) for r in rows]


def answer_request(engine: Engine, rid: int, *, result: dict[str, Any] | None = None,
                   error: dict[str, Any] | None = None) -> bool:
    """Store the leader's answer (once: False when it was answered already)."""
    with engine.begin() as conn:
        done = conn.execute(text(
            "UPDATE leader_requests SET result = :r, error = :e, answered_at = CURRENT_TIMESTAMP"
            " WHERE id = :i AND answered_at IS NULL"),
            {"i": rid, "r": None if result is None else json.dumps(result),
             "e": None if error is None else json.dumps(error)}).rowcount == 1
        if done:
            notify.notify(conn, notify.REPLY, str(rid))
    return done


def request_answer(engine: Engine, rid: int) -> tuple[dict[str, Any] | None,
                                                      dict[str, Any] | None] | None:
    """``(result, error)`` once answered, else None."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT result, error, answered_at FROM leader_requests "
                                "WHERE id = :i"), {"i": rid}).one_or_none()
    if row is None or row[2] is None:
        return None
    return (None if row[0] is None else json.loads(row[0]),
            None if row[1] is None else json.loads(row[1]))


__all__ = ["PublishedView", "QueuedBlock", "answer_request", "mark_found_block_recorded",
           "open_requests", "pending_found_blocks", "publish_view", "queue_found_block",
           "read_view", "request_answer", "submit_request"]
