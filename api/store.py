"""The API's reads and writes against its own tables (api_tokens, registration_challenges,
miner_address_changes) and the one miners-row update the API makes (address rotation).

Same rules as :mod:`payouts.store.repositories`: each function runs its own transaction,
validates before writing and returns plain records.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from payouts.errors import DuplicateKeyError, UnknownMinerError, ValidationError
from payouts.states import Scope
from payouts.store._common import write_connection
from payouts.store.api_models import (
    TOKEN_NAME_MAX,
    ApiToken,
    MinerAddressChange,
    RegistrationChallenge,
)
from payouts.store.hot_reads import hot_query
from payouts.store.models import Miner

#: Operator scopes (:class:`~payouts.states.Scope`). ``admin`` implies every other scope.
SCOPES: tuple[Scope, ...] = tuple(Scope)
TOKEN_PREFIX = "pt_"
_NAME = re.compile(rf"^[A-Za-z0-9._-]{{1,{TOKEN_NAME_MAX}}}$")


def now_utc() -> datetime:
    return datetime.now(UTC)


def hash_token(token: str) -> bytes:
    """SHA-256 of the token string: a 256-bit random secret needs no slow KDF."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked: bool

    def allows(self, scope: str) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def _record(row: object) -> TokenRecord:
    r = row  # a Row of ApiToken columns
    return TokenRecord(
        r.id,  # type: ignore[attr-defined]
        r.name,  # type: ignore[attr-defined]
        frozenset(r.scopes.split()),  # type: ignore[attr-defined]
        r.created_at,  # type: ignore[attr-defined]
        r.expires_at,  # type: ignore[attr-defined]
        bool(r.revoked),  # type: ignore[attr-defined]
    )


def create_token(
    engine: Engine, name: str, scopes: list[str], expires_in: timedelta | None = None
) -> tuple[str, TokenRecord]:
    """Create a token; returns (secret, record). The secret is not stored and cannot be shown
    again."""
    if not _NAME.match(name):
        raise ValidationError(f"token name must match [A-Za-z0-9._-]{{1,{TOKEN_NAME_MAX}}}")
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise ValidationError(
            f"unknown scope(s) {bad}; choose from {[str(s) for s in SCOPES]}" if bad
            else "give a scope",
            code="invalid-scope",
        )
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValidationError("expiry must be in the future")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now_utc() + expires_in if expires_in is not None else None
    with write_connection(engine) as conn, conn.begin():
        if conn.execute(select(ApiToken.id).where(ApiToken.name == name)).first():
            raise DuplicateKeyError(f"a token named {name!r} exists")
        try:
            row = conn.execute(
                insert(ApiToken)
                .values(
                    name=name,
                    token_hash=hash_token(secret),
                    scopes=" ".join(sorted(set(scopes))),
                    expires_at=expires_at,
                    revoked=False,
                )
                .returning(*ApiToken.__table__.c)
            ).one()
        except IntegrityError:
            raise DuplicateKeyError(f"a token named {name!r} exists") from None
    return secret, _record(row)


_FIND_TOKEN = ("SELECT id, name, scopes, created_at, expires_at, revoked, token_hash "
               "FROM api_tokens WHERE token_hash = {param}")


def _utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as :class:`~payouts.store.models.UTCDateTime` reads it: SQLite's driver
    gives its text (naive UTC), PostgreSQL's an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def find_token(engine: Engine, secret: str) -> TokenRecord | None:
    """The token whose hash matches ``secret`` (revoked/expired ones too; the caller decides).

    Every authenticated request runs this: one statement on the thread's autocommit
    connection (payouts.store.hot_reads), not a pooled SQLAlchemy connection with its BEGIN,
    compiled select and ROLLBACK (a sixth of the GIL's time under share ingest). Nothing is
    cached: a revoked token fails from the next request on, whichever process revoked it."""
    digest = hash_token(secret)
    pg = engine.dialect.name == "postgresql"
    rows = hot_query(engine, _FIND_TOKEN.format(param="%s" if pg else "?"), (digest,))
    # The index lookup already matched; the constant-time compare makes the check explicit
    # and independent of how the database compares blobs.
    if not rows or not hmac.compare_digest(bytes(rows[0][6]), digest):
        return None
    tid, name, scopes, created, expires, revoked, _ = rows[0]
    created_at = _utc(created)
    assert created_at is not None  # NOT NULL, server default
    return TokenRecord(int(tid), name, frozenset(scopes.split()), created_at, _utc(expires),
                       bool(revoked))


def list_tokens(engine: Engine) -> list[TokenRecord]:
    with engine.connect() as conn:
        rows = conn.execute(select(*ApiToken.__table__.c).order_by(ApiToken.id)).all()
    return [_record(r) for r in rows]


def revoke_token(engine: Engine, name: str) -> TokenRecord:
    with write_connection(engine) as conn, conn.begin():
        n = conn.execute(update(ApiToken).where(ApiToken.name == name).values(revoked=True))
        if n.rowcount != 1:
            raise ValidationError(f"no token named {name!r}", code="unknown-token")
        row = conn.execute(select(*ApiToken.__table__.c).where(ApiToken.name == name)).one()
    return _record(row)


# -- challenges --------------------------------------------------------------------------------


#: What a registration challenge is for (``registration_challenges.purpose``).
ChallengePurpose = Literal["register", "rotate"]


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: str
    purpose: ChallengePurpose
    account: str
    address: str
    expires_at: datetime
    used: bool


def create_challenge(
    engine: Engine, purpose: ChallengePurpose, account: str, address: str, ttl: timedelta
) -> Challenge:
    nonce = secrets.token_hex(16)
    now = now_utc()
    expires_at = now + ttl
    with write_connection(engine) as conn, conn.begin():
        # Expired challenges (used or not) can serve no request: each new one clears them, so
        # the table holds at most the challenges of the last TTL.
        conn.execute(delete(RegistrationChallenge).where(RegistrationChallenge.expires_at <= now))
        conn.execute(
            insert(RegistrationChallenge).values(
                nonce=nonce, purpose=purpose, account=account, address=address,
                expires_at=expires_at, used=False,
            )
        )
    return Challenge(nonce, purpose, account, address, expires_at, False)


def get_challenge(engine: Engine, nonce: str) -> Challenge | None:
    with engine.connect() as conn:
        r = conn.execute(
            select(*RegistrationChallenge.__table__.c).where(RegistrationChallenge.nonce == nonce)
        ).first()
    if r is None:
        return None
    purpose: ChallengePurpose = r.purpose  # create_challenge writes nothing else
    return Challenge(r.nonce, purpose, r.account, r.address, r.expires_at, bool(r.used))


def mark_used(engine: Engine, nonce: str) -> bool:
    """Mark a challenge used; False if it was already used (a replay lost the race)."""
    with write_connection(engine) as conn, conn.begin():
        n = conn.execute(
            update(RegistrationChallenge)
            .where(RegistrationChallenge.nonce == nonce, RegistrationChallenge.used.is_(False))
            .values(used=True)
        )
    return n.rowcount == 1


def rotate_address(
    engine: Engine, account: str, old_script: bytes, new_script: bytes, nonce: str
) -> None:
    """Swap the payout script, mark the challenge used, and write the audit row — atomically.

    Compare-and-swap on the old script: if the address changed since the signatures were
    checked (a concurrent rotation), nothing is written.
    """
    with write_connection(engine) as conn, conn.begin():
        miner_id = conn.execute(select(Miner.id).where(Miner.account == account)).scalar()
        if miner_id is None:
            raise UnknownMinerError(f"no miner account {account!r}")
        used = conn.execute(
            update(RegistrationChallenge)
            .where(RegistrationChallenge.nonce == nonce, RegistrationChallenge.used.is_(False))
            .values(used=True)
        )
        if used.rowcount != 1:
            raise ValidationError("challenge already used", code="challenge-used")
        swapped = conn.execute(
            update(Miner)
            .where(Miner.id == miner_id, Miner.payout_script == old_script)
            .values(payout_script=new_script)
        )
        if swapped.rowcount != 1:
            raise ValidationError(
                "the payout address changed concurrently; request a new challenge",
                code="address-changed",
            )
        conn.execute(
            insert(MinerAddressChange).values(
                miner_id=miner_id, old_script=old_script, new_script=new_script,
                challenge_nonce=nonce,
            )
        )


def address_changes(engine: Engine, miner_id: int) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(*MinerAddressChange.__table__.c)
            .where(MinerAddressChange.miner_id == miner_id)
            .order_by(MinerAddressChange.id)
        ).all()
    return [
        {"old_script": bytes(r.old_script).hex(), "new_script": bytes(r.new_script).hex(),
         "created_at": r.created_at.isoformat()}
        for r in rows
    ]
