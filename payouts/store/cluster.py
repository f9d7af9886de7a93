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

from sqlalchemy import Connection, Engine, text

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
#
# A frontend inserts a request and waits for the answer (payouts.cluster_frontend); the
# leader claims it with a session advisory lock of its own (keyed by schema and request id),
# acts, stores the answer and lets go. A frontend whose wait times out closes the request only
# if no leader holds that claim (the same lock, tried in its closing transaction): a request is
# either closed unanswered (no leader ever acts on it) or acted on and answered, never both. A
# leader that dies while acting loses its claim with its session; the request is still open
# and the next leader acts on it again, which the settlement actions allow (each is one
# idempotent lifecycle step: a tx is persisted before it is sent, a session aborted once).

#: Kinds whose identical open requests are one request (an operator's retry, or the same
#: button pressed on two frontends, waits for the one already queued instead of acting again).
COALESCED_KINDS = ("broadcast", "fallback")


def _lock_key(param: str) -> str:
    """SQL of an advisory lock key: the hash of the schema and the name bound at ``param``
    (per schema: pools sharing a database do not collide)."""
    return f"hashtextextended(current_schema() || {param}, 0)"


def _claim_name(rid: int) -> str:
    return f":leader-request:{rid}"


@dataclass(frozen=True, slots=True)
class LeaderRequest:
    id: int
    kind: str
    body: dict[str, Any]


def submit_request(engine: Engine, kind: str, body: dict[str, Any]) -> int:
    """Queue a request for the leader (NOTIFY ``request``) and return its id. A kind of
    :data:`COALESCED_KINDS` with an identical request still open returns that one's id: the
    caller waits for the same answer, and the action runs once."""
    if kind not in REQUEST_KINDS:
        raise ValidationError(f"unknown leader request kind {kind!r}")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    with engine.begin() as conn:
        if kind in COALESCED_KINDS:
            if conn.dialect.name == "postgresql":
                # Two frontends queueing the same action at once: one inserts, one joins it.
                conn.execute(text(f"SELECT pg_advisory_xact_lock({_lock_key(':k')})"),
                             {"k": f":leader-queue:{kind}:{canonical}"})
            same = conn.execute(text(
                "SELECT id FROM leader_requests WHERE kind = :k AND body = :b "
                "AND answered_at IS NULL ORDER BY id LIMIT 1"),
                {"k": kind, "b": canonical}).scalar_one_or_none()
            if same is not None:
                return int(same)
        rid = int(conn.execute(text(
            "INSERT INTO leader_requests (kind, body) VALUES (:k, :b) RETURNING id"),
            {"k": kind, "b": canonical}).scalar_one())
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
        return _answer(conn, rid, result, error)


def _answer(conn: Connection, rid: int, result: dict[str, Any] | None,
            error: dict[str, Any] | None) -> bool:
    done = conn.execute(text(
        "UPDATE leader_requests SET result = :r, error = :e, answered_at = CURRENT_TIMESTAMP"
        " WHERE id = :i AND answered_at IS NULL"),
        {"i": rid, "r": None if result is None else json.dumps(result),
         "e": None if error is None else json.dumps(error)}).rowcount == 1
    if done:
        notify.notify(conn, notify.REPLY, str(rid))
    return done


def close_unclaimed(engine: Engine, rid: int, error: dict[str, Any]) -> bool | None:
    """A frontend gives up on request ``rid``: answer it with ``error`` unless a leader holds
    its claim. True: closed now (no leader will act on it); False: it was answered meanwhile;
    None: a leader is acting on it right now (wait for its answer)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql" and not conn.execute(
                text(f"SELECT pg_try_advisory_xact_lock({_lock_key(':k')})"),
                {"k": _claim_name(rid)}).scalar_one():
            return None
        return _answer(conn, rid, None, error)


class RequestClaims:
    """The leader's claims on the requests it acts on: session advisory locks held on a
    connection of its own (not the fenced engine: a claim is no write), so they end with the
    process or its session however it dies."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def claim(self, rid: int) -> bool:
        """True when this process now holds request ``rid``'s claim (False: a frontend is
        closing it this very moment; it is looked at again on the next pass)."""
        if self._conn is None or self._conn.closed:
            self._conn = notify.connect_raw(self.url)
        return bool(self._conn.execute(f"SELECT pg_try_advisory_lock({_lock_key('%s')})",
                                       (_claim_name(rid),)).fetchone()[0])

    def release(self, rid: int) -> None:
        self._conn.execute(f"SELECT pg_advisory_unlock({_lock_key('%s')})", (_claim_name(rid),))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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


__all__ = ["COALESCED_KINDS", "PublishedView", "QueuedBlock", "RequestClaims", "answer_request",
           "close_unclaimed", "mark_found_block_recorded", "open_requests",
           "pending_found_blocks", "publish_view", "queue_found_block", "read_view",
           "request_answer", "submit_request"]
