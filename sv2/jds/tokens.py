"""Mining job tokens (sv2-spec 06-Job-Declaration-Protocol.md §6.4.2-§6.4.5).

A token is 16 bytes: the issuing JD server's 4-byte tag (:func:`server_tag` of its server id,
``[jds] server_id``), a 6-byte little-endian counter (unique for the life of the server, as
SRI's ``AtomicU64``; 2^48 tokens do not wrap), then 6 random bytes (so a client cannot guess
another client's token from its own). The tag binds a token to the server that issued it (issue
15: several JD servers serve one pool, each with its own tokens in memory): a token of another
server is refused with ``invalid-mining-job-token`` and a detail naming both tags, instead of
the bare "unknown" a mistyped token gets, so a JD client sent to the wrong server (a load
balancer that does not keep a client on one JD server) is diagnosed at once. Every token is
bound to the connection that asked for it and expires ``lifetime`` seconds after issue. Expiry
is checked at the moment of use, not by a janitor, so an expired token is never accepted late
(the bug of sv2-apps #765); :meth:`TokenBook.purge` only reclaims memory.

Kinds:

- ``allocated``: from AllocateMiningJobToken.Success; consumed (single use) by the first
  DeclareMiningJob that presents it, whatever the outcome (SRI deallocates on error too);
  RequestPayoutOutputs (PR #202, extension 0x4002) may bind one output set to it first.
- ``declared``: from DeclareMiningJob.Success; names the validated job (what a pool would check
  SetCustomMiningJob against). It is never accepted by DeclareMiningJob.
- ``coinbase-only``: from AllocateMiningJobToken.Success on a connection set up without
  ``DECLARE_TX_DATA`` (Coinbase-only mode, §6.1): it goes straight into SetCustomMiningJob,
  where the pool checks the coinbase against the distribution alone (:mod:`sv2.coinbase_only`).
  It is never accepted by DeclareMiningJob (that is Full-Template mode).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sv2.jds.errors import INVALID_TOKEN, JobRejected

TOKEN_SIZE = 16
TAG_SIZE = 4
COUNTER_SIZE = 6
Kind = Literal["allocated", "declared", "coinbase-only"]


@dataclass(slots=True)
class TokenRecord:
    token: bytes
    owner: int  # connection id
    kind: Kind
    expires_at: float
    user_identifier: str = ""
    bound_outputs: Any = None  # PR #202 set bound to this token (sv2.jds.declaring.BoundOutputs)
    job: Any = None  # for ``declared`` tokens: the validated job
    extra: dict[str, Any] = field(default_factory=dict)


def server_tag(server_id: str) -> bytes:
    """The 4 bytes that start every token of the JD server ``server_id`` (SHA-256 of the id,
    domain-separated). Two servers share a tag with probability 2^-32; a shared tag only costs
    the specific message: the token is still unknown on the other server."""
    return hashlib.sha256(b"payouts/jds-server-id\x00" + server_id.encode()).digest()[:TAG_SIZE]


class TokenBook:
    """All live tokens of one server; ``server_id`` (``[jds] server_id``) is bound into every
    token it issues (module docstring)."""

    def __init__(
        self,
        lifetime: float,
        *,
        server_id: str = "",
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if lifetime <= 0:
            raise ValueError("token lifetime must be positive")
        self.lifetime = lifetime
        self.server_id = server_id
        self.tag = server_tag(server_id)
        self._rng = rng
        self._counter = itertools.count(1)
        self._tokens: dict[bytes, TokenRecord] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def issue(self, owner: int, kind: Kind, now: float, **fields: Any) -> TokenRecord:
        counter = next(self._counter).to_bytes(COUNTER_SIZE, "little")
        token = self.tag + counter + self._rng(TOKEN_SIZE - TAG_SIZE - COUNTER_SIZE)
        rec = TokenRecord(token, owner, kind, now + self.lifetime, **fields)
        self._tokens[token] = rec
        return rec

    def peek(self, token: bytes, owner: int, kind: Kind, now: float) -> TokenRecord:
        """The live record of ``token`` if ``owner`` holds it with this ``kind``; else
        :class:`JobRejected` ``invalid-mining-job-token`` (nothing changes)."""
        rec = self._tokens.get(bytes(token))
        if rec is None:
            raise JobRejected(INVALID_TOKEN, self.foreign(token) or "unknown mining job token")
        if rec.owner != owner:
            # Same answer as "unknown": a client learns nothing about other clients' tokens.
            raise JobRejected(INVALID_TOKEN, "unknown mining job token")
        if rec.kind != kind:
            raise JobRejected(INVALID_TOKEN, f"token is a {rec.kind} token, not {kind}")
        if now >= rec.expires_at:
            del self._tokens[rec.token]
            raise JobRejected(INVALID_TOKEN, "mining job token expired")
        return rec

    def consume(self, token: bytes, owner: int, kind: Kind, now: float) -> TokenRecord:
        """:meth:`peek`, then remove the token (single use)."""
        rec = self.peek(token, owner, kind, now)
        del self._tokens[rec.token]
        return rec

    def foreign(self, token: bytes) -> str | None:
        """Why ``token`` is not this server's, if its tag is another server's (else None)."""
        token = bytes(token)
        if len(token) != TOKEN_SIZE or token[:TAG_SIZE] == self.tag:
            return None
        return (f"mining job token not issued by this JD server (token tag "
                f"{token[:TAG_SIZE].hex()}; this is JD server {self.server_id!r}, tag "
                f"{self.tag.hex()}): a token is valid only on the JD server that allocated it")

    def remove(self, token: bytes) -> None:
        self._tokens.pop(bytes(token), None)

    def get(self, token: bytes) -> TokenRecord | None:
        return self._tokens.get(bytes(token))

    def drop_owner(self, owner: int) -> int:
        """Forget every token of a closed connection (SRI removes them on disconnect)."""
        gone = [t for t, r in self._tokens.items() if r.owner == owner]
        for t in gone:
            del self._tokens[t]
        return len(gone)

    def purge(self, now: float) -> int:
        gone = [t for t, r in self._tokens.items() if now >= r.expires_at]
        for t in gone:
            del self._tokens[t]
        return len(gone)
