"""MuSig2 signing sessions over the API (the cooperative spend of the ``musig2`` mode).

An operator (scope ``settlements:write``) creates a session from the 32-byte sighash and the
committee's 33-byte keys; signers then ``POST`` their public nonce and, once every nonce is in,
their partial signature. Deadlines are enforced by the session itself
(:class:`~payouts.settlement.musig2.session.SigningSession`) with this server's clock; the
session's error codes become problem types (``deadline-passed``, ``invalid-partial-signature``,
``duplicate-nonce``, ``wrong-state``, ``unknown-signer``, ``invalid-nonce``…).

Who may speak for signer *i*: a partial signature authenticates itself (it only verifies under
key *i*), but a nonce does not, so a nonce must carry ``auth`` = BIP-340 signature by key *i*
over ``tagged_hash("payouts.dev/musig2-nonce", session_id || i (4 bytes BE) || pubnonce)``;
otherwise anyone could occupy signer *i*'s slot with junk and get it blamed.

Sessions live in the store (:class:`~payouts.settlement.musig2.registry.SessionRegistry`, tables
``musig_*``): every process of a pool on one database serves the same sessions, so a signer may
post its nonce to one frontend and its partial signature to another, and a restarted server
resumes them. Each change is one transaction under the session's row lock: the session is
read, the call runs on it, what changed is written. A repeated post is a no-op (200, nothing
written); a different value for a filled slot is 409 ``duplicate-nonce`` /
``duplicate-partial-signature``. The routes are plain functions (FastAPI runs them on its
threadpool) because each one waits on the database. Measured costs (libsecp256k1, 100 signers):
the nonce's ``auth`` check ~50 µs, a nonce ~13 µs, NonceAgg ~6.5 ms once per session,
PartialSigVerify ~70 µs; the store's commit per contribution comes on top (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path

from api.auth import AuthFirstRoute, scope_settlements_write
from api.deps import NowDep, SessionsDep
from api.problems import Problem, problem_responses
from api.ratelimit import rate_limited
from api.schemas import NonceIn, PartialSigIn, SessionCreate, SessionOut
from payouts.crypto import schnorr
from payouts.settlement.musig2.registry import SessionRegistry, UnknownSessionError
from payouts.settlement.musig2.session import (
    NONCE_AUTH_TAG,
    PartialSigCheck,
    SessionState,
    SigningSession,
    nonce_auth_message,
)

__all__ = ["NONCE_AUTH_TAG", "nonce_auth_message", "router"]

router = APIRouter(prefix="/v1/musig2/sessions", tags=["musig2"], route_class=AuthFirstRoute)
SessionIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$",
                                    description="a session id (block-<id> for a settlement)")]
MAX_SESSIONS = 1_000
T = TypeVar("T")


def _unknown(session_id: str) -> Problem:
    return Problem(404, "unknown-session", f"no signing session {session_id!r}")


def _get(sessions: SessionRegistry, session_id: str) -> SigningSession:
    session = sessions.load(session_id)
    if session is None:
        raise _unknown(session_id)
    return session


def _apply(sessions: SessionRegistry, session_id: str, op: Callable[[SigningSession], T]) -> T:
    try:
        return sessions.apply(session_id, op)
    except UnknownSessionError:
        raise _unknown(session_id) from None


def _out(session_id: str, s: SigningSession) -> SessionOut:
    failure = s.failure
    sig = s.final_signature().hex() if s.state is SessionState.COMPLETE else None
    return SessionOut(
        id=session_id, state=s.state.value, sighash=s.msg.hex(),
        pubkeys=[p.hex() for p in s.pubkeys], output_key=s.output_key.hex(),
        taproot_merkle_root=None if s.taproot_merkle_root is None else s.taproot_merkle_root.hex(),
        nonce_deadline=s.nonce_deadline, sig_deadline=s.sig_deadline,
        missing_nonces=list(s.missing_nonces), missing_partial_sigs=list(s.missing_partial_sigs),
        aggnonce=s.aggnonce.hex() if s.aggnonce else None, signature=sig,
        failure=failure.reason.value if failure else None,
        failed_signers={i: b.value for i, b in (failure.blame.items() if failure else ())},
        partial_sig_check=s.psig_check.value,
    )


@router.post("", status_code=201, response_model=SessionOut,
             responses=problem_responses(401, 403, 422, 503))
def create_session(body: SessionCreate, sessions: SessionsDep, now: NowDep,
                   _: Any = Depends(scope_settlements_write)) -> SessionOut:
    """Start a signing session for ``sighash`` over the committee ``pubkeys``."""
    root = None if body.taproot_merkle_root is None else bytes.fromhex(body.taproot_merkle_root)
    session = SigningSession(
        [bytes.fromhex(p) for p in body.pubkeys], bytes.fromhex(body.sighash),
        nonce_deadline=now + body.nonce_timeout_s,
        sig_deadline=now + body.nonce_timeout_s + body.sig_timeout_s,
        taproot_merkle_root=root,
        psig_check=PartialSigCheck(body.partial_sig_check),
    )
    # Sessions past their deadline count no more (they fail at their next call).
    if sessions.count_open(now) >= MAX_SESSIONS:
        raise Problem(503, "too-many-sessions", f"{MAX_SESSIONS} sessions are open")
    session_id = secrets.token_hex(16)
    stored, _created = sessions.create(session_id, session)
    return _out(session_id, stored)


@router.get("/{session_id}", response_model=SessionOut,
            responses=problem_responses(404, 429), dependencies=[Depends(rate_limited)])
def get_session(session_id: SessionIdPath, sessions: SessionsDep, now: NowDep) -> SessionOut:
    """State, deadlines, who is missing, the aggregate nonce (round 2 input) and the result."""
    session = sessions.view(session_id, now)
    if session is None:
        raise _unknown(session_id)
    return _out(session_id, session)


@router.post("/{session_id}/nonces", response_model=SessionOut,
             responses=problem_responses(403, 404, 409, 422, 429),
             dependencies=[Depends(rate_limited)])
def post_nonce(session_id: SessionIdPath, body: NonceIn, sessions: SessionsDep,
               now: NowDep) -> SessionOut:
    """Round 1: signer ``signer_index`` submits its 66-byte public nonce (authenticated)."""
    session = _get(sessions, session_id)  # the committee never changes: checked outside the lock
    if body.signer_index >= session.n_signers:
        raise Problem(404, "unknown-signer", f"no signer {body.signer_index}",
                      signer_index=body.signer_index)
    pubnonce = bytes.fromhex(body.pubnonce)
    key = session.pubkeys[body.signer_index]
    msg = nonce_auth_message(session_id, body.signer_index, pubnonce)
    if not schnorr.verify(bytes.fromhex(body.auth), msg, key[1:]):
        raise Problem(403, "signer-auth-failed",
                      f"auth is not a signature by signer {body.signer_index}'s key",
                      signer_index=body.signer_index)

    def add(s: SigningSession) -> SigningSession:
        s.add_nonce(body.signer_index, pubnonce, now)
        return s

    return _out(session_id, _apply(sessions, session_id, add))


@router.post("/{session_id}/partial-signatures", response_model=SessionOut,
             responses=problem_responses(404, 409, 422, 429),
             dependencies=[Depends(rate_limited)])
def post_partial_sig(session_id: SessionIdPath, body: PartialSigIn, sessions: SessionsDep,
                     now: NowDep) -> SessionOut:
    """Round 2: a 32-byte partial signature, verified at once (BIP-327 PartialSigVerify)."""
    psig = bytes.fromhex(body.psig)

    def add(s: SigningSession) -> SigningSession:
        s.add_partial_sig(body.signer_index, psig, now)
        return s

    return _out(session_id, _apply(sessions, session_id, add))

