"""Operator authentication: ``Authorization: Bearer <token>`` with scopes.

Tokens are 256-bit random secrets (``pt_`` + base64url), created by ``payouts tokens create``;
only their SHA-256 is stored. Each request looks the hash up (no cache: a revocation takes effect
on the next request). Failures are 401 problems (``missing-token``, ``invalid-token``,
``token-expired``, ``token-revoked``, with ``WWW-Authenticate: Bearer``) or 403
``insufficient-scope``. Miners never hold tokens: they authenticate by BIP-322/BIP-340
signatures per request (see the miners and musig2 routers).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import store
from api.deps import ServiceDep
from api.problems import Problem
from payouts.service import PoolService
from payouts.states import Scope

bearer = HTTPBearer(auto_error=False, description="operator token (payouts tokens create)")


def _unauthorized(code: str, detail: str) -> Problem:
    return Problem(
        401, code, detail, headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                    f'error_description="{code}"'}
    )


def authenticate(service: PoolService, secret: str | None, scope: Scope) -> store.TokenRecord:
    """The stored token whose secret is ``secret`` if it is valid and allows ``scope``; else
    the 401/403 problem (also for a token sent another way than the header: the operator
    page's cookie, docs/dashboards.md)."""
    if not secret:
        raise Problem(401, "missing-token", "this endpoint needs an operator bearer token",
                      headers={"WWW-Authenticate": "Bearer"})
    token = store.find_token(service.engine, secret)
    if token is None:
        raise _unauthorized("invalid-token", "unknown token")
    if token.revoked:
        raise _unauthorized("token-revoked", f"token {token.name!r} was revoked")
    if token.expires_at is not None and token.expires_at <= store.now_utc():
        raise _unauthorized("token-expired", f"token {token.name!r} expired")
    if not token.allows(scope):
        raise Problem(403, "insufficient-scope",
                      f"token {token.name!r} lacks scope {str(scope)!r}",
                      required_scope=str(scope))
    return token


def bearer_secret(creds: HTTPAuthorizationCredentials | None) -> str | None:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        return None
    return creds.credentials


def require_scope(scope: Scope) -> Callable[..., store.TokenRecord]:
    """A dependency that authenticates the bearer token and requires ``scope``."""

    def dependency(
        request: Request,
        service: ServiceDep,
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> store.TokenRecord:
        token = authenticate(service, bearer_secret(creds), scope)
        request.state.token_name = token.name
        return token

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


# One dependency per scope (module-level, so route signatures stay simple and cache-friendly).
scope_read = require_scope(Scope.READ)
scope_shares_write = require_scope(Scope.SHARES_WRITE)
scope_distributions_write = require_scope(Scope.DISTRIBUTIONS_WRITE)
scope_settlements_write = require_scope(Scope.SETTLEMENTS_WRITE)
scope_admin = require_scope(Scope.ADMIN)
