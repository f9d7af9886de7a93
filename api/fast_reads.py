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
wait, one read at a time, and the ceiling fell to one over the round trip. There reads are
coalesced (:class:`GroupReads`): a read that arrives while :data:`PG_READS_IN_FLIGHT` queries
are running waits for the next one, which answers every account then waiting in one query
(``= ANY`` of an array), on threads of their own (each keeping its autocommit connection).
One round trip and one server-side execution serve many requests, and each answer still comes
from a query that started after its request arrived. On SQLite (in-process, CPU only) the
query stays inline, where a thread hop would cost more than the query.

Anything else goes to the route, which stays the documented contract (OpenAPI) and answers
every other case exactly as before: an account that misses the path pattern (422), an unknown
account (404 ``unknown-miner``), a database error, another method. Nothing is cached: every
answer is the query's, so a ledger line written by another process is seen at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


PG_READS_IN_FLIGHT = 2
Balance = tuple[bytes, int]


class GroupReads:
    """Balance reads coalesced into one query each (group read; the module docstring).

    Lives on one event loop and runs its queries there, on psycopg ``AsyncConnection``s of its
    own (autocommit; one per query in flight): a thread per query made each round trip wait
    for the GIL twice, and the ceiling stayed at a third of SQLite's."""

    def __init__(self, service: PoolService, in_flight: int = PG_READS_IN_FLIGHT) -> None:
        """Created on the event loop it serves."""
        self.service = service
        self.in_flight = in_flight
        self.loop = asyncio.get_running_loop()
        self._waiting: dict[str, list[asyncio.Future[Balance | None]]] = {}
        self._running = 0
        self._idle: list[Any] = []  # open connections not running a query
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, account: str) -> Balance | None:
        """``account``'s (script, owed), None when no such miner; from a query started after
        this call."""
        fut: asyncio.Future[Balance | None] = self.loop.create_future()
        self._waiting.setdefault(account, []).append(fut)
        if self._running < self.in_flight:
            self._launch()
        return await fut

    def _launch(self) -> None:
        group, self._waiting = self._waiting, {}
        self._running += 1
        task = self.loop.create_task(self._run(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _query(self, accounts: list[str]) -> dict[str, Balance]:
        import psycopg

        from payouts.store.ledger import miner_balances_async
        from payouts.store.notify import libpq_url

        engine = self.service.engine
        for attempt in (0, 1):
            conn = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(
                libpq_url(engine.url.render_as_string(hide_password=False)), autocommit=True)
            try:
                found = await miner_balances_async(conn, engine, accounts)
            except psycopg.OperationalError:
                await conn.close()  # dropped (a server restart): once more on a fresh one
                if attempt:
                    raise
                continue
            except BaseException:
                await conn.close()
                raise
            self._idle.append(conn)
            return {a: (f[1], f[2]) for a, f in found.items()}
        raise AssertionError("unreachable")

    async def _run(self, group: dict[str, list[asyncio.Future[Balance | None]]]) -> None:
        error: BaseException | None = None
        found: dict[str, Balance] = {}
        try:
            found = await self._query(list(group))
        except BaseException as e:  # every waiting read hears it
            error = e
        self._running -= 1
        for account, futures in group.items():
            for fut in futures:
                if fut.done():  # its request went away (client disconnect)
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(found.get(account))
        if self._waiting and self._running < self.in_flight:
            self._launch()
        if isinstance(error, asyncio.CancelledError):
            raise error

    def close(self) -> None:
        """Cancel the queries in flight; close the idle connections (a socket close needs no
        event loop, so this works from any loop or none)."""
        for task in list(self._tasks):
            task.cancel()
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):  # closing either way
                conn.pgconn.finish()


class BalanceReads:
    """Plain-ASGI fast path for ``GET /v1/miners/{account}/balance`` (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._group: GroupReads | None = None

    async def _balance(self, service: PoolService, account: str) -> Balance:
        if service.engine.dialect.name != "postgresql":
            return service.balance(account)
        loop = asyncio.get_running_loop()
        if self._group is None or self._group.service is not service \
                or self._group.loop is not loop:  # a test client's new loop: start afresh
            if self._group is not None:
                self._group.close()
            self._group = GroupReads(service)
        found = await self._group.get(account)
        if found is None:
            raise UnknownMinerError(f"no miner account {account!r}")
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._closing_at_shutdown(receive), send)
            return
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

    def _closing_at_shutdown(self, receive: Receive) -> Receive:
        """``receive`` that closes the group reads' connections when the server shuts down."""

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self._group is not None:
                self._group.close()
                self._group = None
            return message

        return wrapped

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


__all__ = ["ROUTE", "BalanceReads", "GroupReads", "balance_body"]

