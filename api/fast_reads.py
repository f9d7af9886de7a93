"""The balance read, answered before FastAPI's routing (issue #17).

``GET /v1/miners/{account}/balance`` is the API's hottest public read: pools' miner pages and
miners' scripts poll it. Its work is one indexed query (:meth:`PoolService.balance`); FastAPI's
machinery around it (routing, dependency solving, the response model's validation and
serialisation, the exception middleware) cost several times that, and capped the server near
1,200–2,900 requests/s on one core. :class:`BalanceReads` answers the well-formed read itself,
plain ASGI, with the same bytes the route gives:

* the same body (``BalanceOut``'s members in its order, compact JSON as FastAPI writes it) and
  headers (``content-type: application/json``, ``content-length``);
* the same rate limit, from the same bucket (429 ``rate-limited`` problem + ``Retry-After``);
* the access log line and HTTP metrics labelled with the route's template (it sits inside
  :class:`api.app.AccessLogMiddleware`).

On PostgreSQL the query is a round trip to another process, and on a busy machine its wait
(the server process getting a core) dwarfs its CPU: run inline it held the event loop for every
wait, one read at a time, and the ceiling fell to one over the round trip. There the query runs
on a few threads of its own (:data:`PG_READ_THREADS`, each keeping its autocommit connection),
so the waits of concurrent reads overlap. On SQLite (in-process, CPU only) it stays inline,
where a thread hop would cost more than the query.

Anything else goes to the route, which stays the documented contract (OpenAPI) and answers
every other case exactly as before: an account that misses the path pattern (422), an unknown
account (404 ``unknown-miner``), a database error, another method. Nothing is cached: every
answer is the query's, so a ledger line written by another process is seen at once.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem_response
from api.ratelimit import too_many
from payouts.accounting.shares import ACCOUNT_MAX
from payouts.errors import UnknownMinerError
from payouts.service import PoolService

ROUTE = "/v1/miners/{account}/balance"
_PATH = re.compile(rf"/v1/miners/([A-Za-z0-9._-]{{1,{ACCOUNT_MAX}}})/balance\Z")
_JSON_HEADERS = (b"content-type", b"application/json")


class _Route:
    """What :class:`api.app.AccessLogMiddleware` reads of a matched route: its template."""

    path = ROUTE


_ROUTE = _Route()


def balance_body(account: str, address: str | None, owed: int) -> bytes:
    """``BalanceOut`` as FastAPI renders it (compact, non-ASCII kept)."""
    return json.dumps({"account": account, "address": address, "owed_sats": owed},
                      ensure_ascii=False, separators=(",", ":")).encode()


PG_READ_THREADS = 4


class BalanceReads:
    """Plain-ASGI fast path for ``GET /v1/miners/{account}/balance`` (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._threads: ThreadPoolExecutor | None = None

    async def _balance(self, service: PoolService, account: str) -> tuple[bytes, int]:
        if service.engine.dialect.name != "postgresql":
            return service.balance(account)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(PG_READ_THREADS, thread_name_prefix="balance")
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, service.balance, account)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        m = _PATH.match(scope["path"])
        if m is None:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        account = m.group(1)
        scope["route"] = _ROUTE
        limiter = state.limiter
        if limiter is not None:
            client = scope.get("client")
            key = client[0] if client else "unknown"
            # The shared limiter (PostgreSQL, every process) is a database round trip: off
            # the event loop, like api.ratelimit.rate_limited.
            wait = (await run_in_threadpool(limiter.take, key)) if limiter.shared \
                else limiter.take(key)
            if wait > 0:
                await _too_many(scope, receive, send, wait)
                return
        service = state.service
        try:
            script, owed = await self._balance(service, account)
        except UnknownMinerError:
            scope.pop("route", None)
            await self._route(scope, receive, send)  # its 404 problem, word for word
            return
        from api.routers.miners import _address_of

        body = balance_body(account, _address_of(script, service.settings.network), owed)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADERS]})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The route's own limiter check would take a second token from the bucket: mark the
        # request as counted already (api.ratelimit.rate_limited reads the mark).
        scope.setdefault("state", {})["rate_counted"] = True
        await self.app(scope, receive, send)


async def _too_many(scope: Scope, receive: Receive, send: Send, wait: float) -> None:
    p = too_many(wait)
    response = problem_response(p.status, p.code, p.detail, instance=scope["path"],
                                headers=p.headers, **p.extra)
    await response(scope, receive, send)


__all__ = ["ROUTE", "BalanceReads", "balance_body"]

