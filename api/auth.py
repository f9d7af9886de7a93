"""Operator authentication: ``Authorization: Bearer <token>`` with scopes.

Tokens are 256-bit random secrets (``pt_`` + base64url), created by ``payouts tokens create``;
only their SHA-256 is stored. Each request looks the hash up (no cache: a revocation takes effect
on the next request). Failures are 401 problems (``missing-token``, ``invalid-token``,
``token-expired``, ``token-revoked``, with ``WWW-Authenticate: Bearer``) or 403
``insufficient-scope``. Routers of operator routes use :class:`AuthFirstRoute`, which checks
the token before the body is read. Miners never hold tokens: they authenticate by BIP-322/BIP-340
signatures per request (see the miners and musig2 routers).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from api import store
from api.problems import Problem
from payouts.states import Scope

_bearer = HTTPBearer(auto_error=False, description="operator token (payouts tokens create)")


def _unauthorized(code: str, detail: str) -> Problem:
    return Problem(
        401, code, detail, headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                    f'error_description="{code}"'}
    )


def authenticate(request: Request, scope: Scope) -> store.TokenRecord:
    """The bearer token of ``request`` if it grants ``scope``; else a 401/403 problem. The
    result is kept on the request: the route's dependency then finds it there."""
    found: store.TokenRecord | None = getattr(request.state, "token", None)
    if found is not None and found.allows(scope):
        return found
    header = request.headers.get("authorization", "")
    kind, _, secret = header.partition(" ")
    secret = secret.strip()
    token = check_secret(request.app.state.service.engine,
                         secret if kind.lower() == "bearer" else "", scope)
    request.state.token = token
    request.state.token_name = token.name
    return token


def check_secret(engine: Engine, secret: str | None, scope: Scope) -> store.TokenRecord:
    """The stored token whose secret is ``secret`` if it is valid and grants ``scope``; else
    the 401/403 problem. (Also for a token that came another way than the header: the
    operator page's cookie, docs/dashboards.md.)"""
    if not secret:
        raise Problem(401, "missing-token", "this endpoint needs an operator bearer token",
                      headers={"WWW-Authenticate": "Bearer"})
    token = store.find_token(engine, secret)
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


def require_scope(scope: Scope) -> Callable[..., store.TokenRecord]:
    """A dependency that authenticates the bearer token and requires ``scope``."""

    def dependency(
        request: Request,
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> store.TokenRecord:
        return authenticate(request, scope)

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    _SCOPE_OF[dependency] = scope
    return dependency


_SCOPE_OF: dict[Callable[..., store.TokenRecord], Scope] = {}


def _route_scope(dependant: Any) -> Scope | None:
    for dep in dependant.dependencies:
        scope = _SCOPE_OF.get(dep.call) or _route_scope(dep)
        if scope is not None:
            return scope
    return None


class AuthFirstRoute(APIRoute):
    """A route that authenticates its bearer token before it reads the request body: a
    request without a valid token is 401/403 whatever its body (FastAPI parses the body
    first, so malformed JSON from anyone got 422 before 401, issue #13)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = _route_scope(self.dependant)
        if scope is None:
            return handler

        async def authenticated(request: Request) -> Response:
            authenticate(request, scope)
            return await handler(request)

        return authenticated


# One dependency per scope (module-level, so route signatures stay simple and cache-friendly).
scope_read = require_scope(Scope.READ)
scope_shares_write = require_scope(Scope.SHARES_WRITE)
scope_distributions_write = require_scope(Scope.DISTRIBUTIONS_WRITE)
scope_settlements_write = require_scope(Scope.SETTLEMENTS_WRITE)
scope_admin = require_scope(Scope.ADMIN)
