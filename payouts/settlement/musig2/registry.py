"""MuSig2 signing sessions kept in the store, so every process of a pool serves the same ones.

:class:`SessionRegistry` holds :class:`~payouts.settlement.musig2.session.SigningSession` state
in the ``musig_*`` tables (:mod:`payouts.store.musig_models`). Issue 15: with one session per
process, signers' messages split between processes (a nonce posted to frontend A never reached
B's session). Here:

* **One session per id, and per settlement.** :meth:`SessionRegistry.create` is a get-or-create
  (``INSERT ... ON CONFLICT DO NOTHING`` on the primary key and on the unique ``block_id``):
  two processes opening the session of one block both get the first one's, with its deadlines.
* **Every change is one transaction under the session's row lock** (:meth:`SessionRegistry.apply`):
  ``SELECT ... FOR UPDATE`` on PostgreSQL, the write lock taken at ``BEGIN IMMEDIATE`` on SQLite.
  The session is read back (from this process's memory when the row's ``version`` is the one
  it last wrote or read, else from the rows), the call runs on it exactly as in memory, and what
  changed is written before the lock is released: a nonce or partial signature posted to A is
  seen by B's next call; the aggregation (the call whose contribution completes a round) runs
  once, in whichever process holds the lock; a repeated post changes nothing (no write); a
  conflicting one is refused with the session's error (``duplicate-nonce``...), its rejection
  recorded as in memory. A call that raises a :class:`~payouts.errors.PayoutsError` still
  persists what the session did (a late contribution fails the session: that failure is kept);
  anything else rolls back and drops the copy in memory.
* **Resumable.** Nothing lives only in a process: a restarted process, or another one, rebuilds
  the session from the rows (KeyAgg once, the round-1 context from the stored aggregate nonce;
  the contributions were checked when they arrived and are not checked again).
* **Deadlines unchanged.** They are absolute times on the servers' clock, stored with the
  session; every call still ticks first (the processes must share a clock: NTP).

Only public values are stored; the secret nonces never leave the signers (BIP-327).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from payouts.errors import PayoutsError
from payouts.settlement.musig2.errors import SessionError
from payouts.settlement.musig2.session import (
    Blame,
    Failure,
    FailureReason,
    PartialSigCheck,
    Rejection,
    SessionProgress,
    SessionState,
    SigningSession,
)
from payouts.store._common import write_connection
from payouts.store.engine import insert_or_skip
from payouts.store.musig_models import (
    MusigCommittee,
    MusigNonce,
    MusigPartialSig,
    MusigRejection,
    MusigSession,
)

T = TypeVar("T")

_OPEN_STATES = (SessionState.COLLECTING_NONCES, SessionState.COLLECTING_PARTIAL_SIGS)

# The statements of every call, built once: building them per call (coercions, cache keys) was
# ~2 ms of CPU per contribution, about as much as the rest of the call besides the commit.
_T = cast(Table, MusigSession.__table__)
_SID: BindParameter[str] = bindparam("sid")
_ROW = select(_T).where(_T.c.id == _SID)
_ROW_LOCKED = _ROW.with_for_update()
_BUMP = (
    update(_T).where(_T.c.id == _SID, _T.c.version == bindparam("old_version"))
    .values({c: bindparam(f"new_{c}") for c in (
        "state", "aggnonce", "signature", "failure_reason", "failure_at", "failure_detail",
        "failure_blame", "version")})
)
_COMMITTEE = (
    select(MusigCommittee.pubkey, MusigCommittee.signer_index, MusigCommittee.last_bad_psig)
    .where(MusigCommittee.session_id == _SID).order_by(MusigCommittee.signer_index)
)
_NONCES = select(MusigNonce.signer_index, MusigNonce.pubnonce).where(
    MusigNonce.session_id == _SID)
_PSIGS = select(MusigPartialSig.signer_index, MusigPartialSig.psig,
                MusigPartialSig.unverified_at).where(MusigPartialSig.session_id == _SID)
_REJECTIONS = (
    select(MusigRejection.signer_index, MusigRejection.code, MusigRejection.at)
    .where(MusigRejection.session_id == _SID).order_by(MusigRejection.id)
)
_ADD_NONCE = insert(MusigNonce)
_ADD_PSIG = insert(MusigPartialSig)
#: Sessions a process keeps in memory at most (the least recently stored go first; a dropped
#: one is read back from the rows when it is used again).
CACHE_MAX = 4096
_EMPTY = SessionProgress(SessionState.COLLECTING_NONCES, {}, {}, {}, {}, (), None, None, None)


class UnknownSessionError(SessionError):
    """No session has this id (never opened, or discarded with its orphaned block)."""

    code = "unknown-session"


def session_id(block_id: int) -> str:
    """The id under which a block's settlement signing session is stored and served."""
    return f"block-{block_id}"


class SessionRegistry:
    """The signing sessions of one store (module docstring). Thread-safe; one per process is
    enough, but any number of them (in any processes) on one database agree."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # id -> (version, session): the last state this process wrote or read. Used only after
        # the row's version was read and matched, so another process's write is never missed.
        self._cache: dict[str, tuple[int, SigningSession]] = {}
        # Serialises this process's threads on the cache (the API's threadpool routes, the
        # event loop); across processes the row lock does it.
        self._lock = threading.RLock()

    # -- reads --------------------------------------------------------------------------------

    def exists(self, sid: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(
                select(MusigSession.id).where(MusigSession.id == sid)
            ).first() is not None

    def block_session(self, block_id: int) -> str | None:
        """The id of a block's settlement signing session, if it has one (any process's)."""
        sid = session_id(block_id)
        return sid if self.exists(sid) else None

    def load(self, sid: str) -> SigningSession | None:
        """The session as last committed (None if unknown). Read it, never call its methods:
        changes go through :meth:`apply` (or :meth:`get`'s handle)."""
        with self._lock, self.engine.connect() as conn:
            return self._read(conn, sid, lock=False)

    def view(self, sid: str, now: float) -> SigningSession | None:
        """The session as seen at ``now`` (None if unknown): read without a lock, unless the
        current round's deadline has passed, then ticked (failed, once) under the lock."""
        session = self.load(sid)
        if session is None or session.state not in _OPEN_STATES:
            return session
        deadline = (session.nonce_deadline if session.state is SessionState.COLLECTING_NONCES
                    else session.sig_deadline)
        if now <= deadline:
            return session
        try:
            return self.tick(sid, now)
        except UnknownSessionError:  # discarded meanwhile
            return None

    def get(self, sid: str) -> StoredSession | None:
        """A handle on the session whose methods run through this registry, or None."""
        return StoredSession(self, sid) if self.exists(sid) else None

    def count_open(self, now: float) -> int:
        """Sessions still collecting and within their current round's deadline."""
        s = MusigSession
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(s).where(or_(
                and_(s.state == SessionState.COLLECTING_NONCES, s.nonce_deadline >= now),
                and_(s.state == SessionState.COLLECTING_PARTIAL_SIGS, s.sig_deadline >= now),
            ))).scalar_one())

    # -- writes -------------------------------------------------------------------------------

    def create(
        self, sid: str, session: SigningSession, *, block_id: int | None = None
    ) -> tuple[SigningSession, bool]:
        """Store ``session`` under ``sid`` unless a session with this id (or for this block)
        is there already; returns the stored session and whether this call created it."""
        values: dict[str, Any] = {
            "id": sid, "block_id": block_id, "msg": session.msg,
            "taproot_merkle_root": session.taproot_merkle_root,
            "max_signers": session.max_signers, "psig_check": session.psig_check.value,
            "nonce_deadline": session.nonce_deadline, "sig_deadline": session.sig_deadline,
            "state": SessionState.COLLECTING_NONCES.value, "version": 0,
        }
        with self._lock:
            try:
                with write_connection(self.engine) as conn, conn.begin():
                    created = conn.execute(
                        insert_or_skip(conn, MusigSession).values(**values)
                        .returning(MusigSession.id)
                    ).first() is not None
                    if created:
                        conn.execute(insert(MusigCommittee), [
                            {"session_id": sid, "signer_index": i, "pubkey": pk}
                            for i, pk in enumerate(session.pubkeys)])
                        self._persist(conn, sid, 0, _EMPTY, session)
                    stored = self._read(conn, sid, lock=False)
            except BaseException:
                self._cache.pop(sid, None)
                raise
        if stored is None:  # the id is free but the block has a session under another id
            raise UnknownSessionError(f"block {block_id} has a signing session under another id")
        return stored, created

    def apply(self, sid: str, op: Callable[[SigningSession], T]) -> T:
        """Run ``op`` on the session under its row lock and persist what it changed, in one
        transaction (module docstring). Raises :class:`UnknownSessionError` for an unknown id."""
        with self._lock:
            refused: PayoutsError | None = None
            try:
                with write_connection(self.engine) as conn, conn.begin():
                    session = self._read(conn, sid, lock=True)
                    if session is None:
                        raise UnknownSessionError(f"no signing session {sid!r}")
                    version = self._cache[sid][0]
                    before = session.progress()
                    try:
                        result = op(session)
                    except PayoutsError as e:
                        refused = e  # raised after the commit: what the session did is kept
                    self._persist(conn, sid, version, before, session)
            except BaseException:
                self._cache.pop(sid, None)
                raise
            if refused is not None:
                raise refused
            return result

    def tick(self, sid: str, now: float) -> SigningSession:
        """The session after :meth:`SigningSession.tick` (a passed deadline fails it, once)."""
        def tick(s: SigningSession) -> SigningSession:
            s.tick(now)
            return s

        return self.apply(sid, tick)

    def discard(self, sid: str) -> bool:
        """Delete a session and its rows (its block left the chain: a new session is opened if
        the block comes back). False if there was none."""
        with self._lock, write_connection(self.engine) as conn, conn.begin():
            self._cache.pop(sid, None)
            return conn.execute(delete(MusigSession).where(MusigSession.id == sid)).rowcount > 0

    # -- rows <-> session ---------------------------------------------------------------------

    def _read(self, conn: Connection, sid: str, *, lock: bool) -> SigningSession | None:
        row = conn.execute(_ROW_LOCKED if lock else _ROW, {"sid": sid}).mappings().first()
        if row is None:
            self._cache.pop(sid, None)
            return None
        cached = self._cache.get(sid)
        if cached is not None and cached[0] == row["version"]:
            return cached[1]
        args = {"sid": sid}
        committee = conn.execute(_COMMITTEE, args).all()
        session = SigningSession(
            [r.pubkey for r in committee], row["msg"],
            nonce_deadline=row["nonce_deadline"], sig_deadline=row["sig_deadline"],
            taproot_merkle_root=row["taproot_merkle_root"], max_signers=row["max_signers"],
            psig_check=PartialSigCheck(row["psig_check"]),
        )
        nonces = conn.execute(_NONCES, args).all()
        psigs = conn.execute(_PSIGS, args).all()
        rejections = conn.execute(_REJECTIONS, args).all()
        failure = None
        if row["failure_reason"] is not None:
            blame = {int(k): Blame(v) for k, v in json.loads(row["failure_blame"] or "{}").items()}
            failure = Failure(FailureReason(row["failure_reason"]), row["failure_at"],
                              MappingProxyType(blame), row["failure_detail"] or "")
        session.restore(SessionProgress(
            state=SessionState(row["state"]),
            pubnonces={r.signer_index: r.pubnonce for r in nonces},
            psigs={r.signer_index: r.psig for r in psigs},
            unverified={r.signer_index: r.unverified_at for r in psigs
                        if r.unverified_at is not None},
            last_bad={r.signer_index: r.last_bad_psig for r in committee
                      if r.last_bad_psig is not None},
            rejections=tuple(Rejection(r.signer_index, r.code, r.at) for r in rejections),
            aggnonce=row["aggnonce"], signature=row["signature"], failure=failure,
        ))
        self._remember(sid, row["version"], session)
        return session

    def _persist(self, conn: Connection, sid: str, version: int, before: SessionProgress,
                 session: SigningSession) -> None:
        after = session.progress()
        if after != before:
            self._write(conn, sid, version, before, after)
        self._remember(sid, version + (after != before), session)

    def _remember(self, sid: str, version: int, session: SigningSession) -> None:
        self._cache.pop(sid, None)
        self._cache[sid] = (version, session)
        while len(self._cache) > CACHE_MAX:
            del self._cache[next(iter(self._cache))]

    @staticmethod
    def _write(conn: Connection, sid: str, version: int, before: SessionProgress,
               after: SessionProgress) -> None:
        """Write what changed from ``before`` to ``after`` and bump the version (the row is
        locked by the caller; the version condition is a second guard)."""
        f = after.failure
        done = conn.execute(_BUMP, {
            "sid": sid, "old_version": version, "new_version": version + 1,
            "new_state": after.state.value, "new_aggnonce": after.aggnonce,
            "new_signature": after.signature,
            "new_failure_reason": None if f is None else f.reason.value,
            "new_failure_at": None if f is None else f.at,
            "new_failure_detail": None if f is None else f.detail,
            "new_failure_blame": None if f is None else json.dumps(
                {str(i): b.value for i, b in sorted(f.blame.items())}),
        }).rowcount
        if done != 1:  # pragma: no cover - the row lock rules it out
            raise RuntimeError(f"signing session {sid!r} changed under its lock")
        new_nonces = [{"session_id": sid, "signer_index": i, "pubnonce": v}
                      for i, v in after.pubnonces.items() if i not in before.pubnonces]
        if new_nonces:
            conn.execute(_ADD_NONCE, new_nonces)

        def slot(p: SessionProgress, i: int) -> tuple[bytes | None, float | None]:
            return p.psigs.get(i), p.unverified.get(i)

        changed = [i for i in sorted(set(before.psigs) | set(after.psigs))
                   if slot(before, i) != slot(after, i)]
        if changed:
            conn.execute(delete(MusigPartialSig).where(
                MusigPartialSig.session_id == sid, MusigPartialSig.signer_index.in_(changed)))
            rows = [{"session_id": sid, "signer_index": i, "psig": after.psigs[i],
                     "unverified_at": after.unverified.get(i)}
                    for i in changed if i in after.psigs]
            if rows:
                conn.execute(_ADD_PSIG, rows)
        for i in sorted(set(before.last_bad) | set(after.last_bad)):
            if before.last_bad.get(i) != after.last_bad.get(i):
                conn.execute(update(MusigCommittee).where(
                    MusigCommittee.session_id == sid, MusigCommittee.signer_index == i
                ).values(last_bad_psig=after.last_bad.get(i)))
        new_rejections = after.rejections[len(before.rejections):]
        if new_rejections:
            conn.execute(insert(MusigRejection), [
                {"session_id": sid, "signer_index": r.signer_index, "code": r.code, "at": r.at}
                for r in new_rejections])


class StoredSession:
    """A handle on one stored session: attribute reads see the last committed state
    (:meth:`SessionRegistry.load`); :meth:`add_nonce`, :meth:`add_partial_sig`, :meth:`tick`
    and :meth:`abort` run through :meth:`SessionRegistry.apply`, so they behave exactly as on a
    :class:`SigningSession` and persist."""

    def __init__(self, registry: SessionRegistry, sid: str) -> None:
        self.registry = registry
        self.id = sid

    @property
    def current(self) -> SigningSession:
        session = self.registry.load(self.id)
        if session is None:
            raise UnknownSessionError(f"no signing session {self.id!r}")
        return session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)

    def add_nonce(self, signer_index: int, pubnonce: bytes, now: float) -> SessionState:
        return self.registry.apply(self.id, lambda s: s.add_nonce(signer_index, pubnonce, now))

    def add_partial_sig(self, signer_index: int, psig: bytes, now: float) -> SessionState:
        return self.registry.apply(self.id, lambda s: s.add_partial_sig(signer_index, psig, now))

    def tick(self, now: float) -> SessionState:
        return self.registry.apply(self.id, lambda s: s.tick(now))

    def abort(self, now: float, detail: str = "") -> None:
        self.registry.apply(self.id, lambda s: s.abort(now, detail))


__all__ = ["SessionRegistry", "StoredSession", "UnknownSessionError", "session_id"]
