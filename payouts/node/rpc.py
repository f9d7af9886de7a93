"""A small async JSON-RPC 1.0 client for bitcoind on httpx.

Auth is user/password or the cookie file (``<datadir>/<chain>/.cookie``, re-read after a 401
because bitcoind writes a fresh one at every start). Amounts come back as JSON numbers in BTC;
they are parsed as :class:`~decimal.Decimal`, never float, and converted to satoshis with
:func:`btc_to_sats` (invariant 1: money is integers).

Errors are :class:`~payouts.node.interface.NodeError` with bitcoind's own message as
``reason`` (e.g. ``bad-txns-inputs-missingorspent``) and the RPC error code in the text, or a
sentence saying the node could not be reached / refused the credentials.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from payouts.node.interface import NodeError

DEFAULT_TIMEOUT_S = 30.0
SATS_PER_BTC = Decimal(100_000_000)


class RpcError(NodeError):
    """bitcoind answered with a JSON-RPC error object."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(message)
        self.method = method
        self.code = code
        self.args = (f"{method}: {message} (RPC error {code})",)


def btc_to_sats(value: Any) -> int:
    """Exact BTC (Decimal/str/int from the JSON) to integer satoshis."""
    sats = Decimal(str(value)) * SATS_PER_BTC
    if sats != sats.to_integral_value():
        raise ValueError(f"{value} BTC is not a whole number of satoshis")
    return int(sats)


class RpcClient:
    """One bitcoind endpoint. ``await call("getblockcount")``.

    The underlying ``httpx.AsyncClient`` is bound to the event loop that first used it; a
    call from another loop (e.g. successive ``asyncio.run`` in tests or a CLI) gets a fresh
    client instead of a connection pool that belongs to a closed loop.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        cookie_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("give both rpc user and password, or neither (cookie auth)")
        self.url = url
        self._user, self._password = user, password
        self._cookie = Path(cookie_file) if cookie_file is not None else None
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _auth(self) -> httpx.BasicAuth | None:
        if self._user is not None and self._password is not None:
            return httpx.BasicAuth(self._user, self._password)
        if self._cookie is None:
            return None
        try:
            user, _, password = self._cookie.read_text().strip().partition(":")
        except OSError as e:
            raise NodeError(f"cannot read the bitcoind RPC cookie {self._cookie}: {e}") from None
        return httpx.BasicAuth(user, password)

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self._timeout)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._loop = None

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method``; returns ``result`` or raises NodeError/RpcError."""
        body = {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)}
        for attempt in (1, 2):
            try:
                resp = await self._http().post(
                    self.url,
                    content=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                    auth=self._auth() or httpx.USE_CLIENT_DEFAULT,
                    timeout=self._timeout if timeout is None else timeout,
                )
            except httpx.TimeoutException:
                raise NodeError(f"bitcoind {method}: no answer from {self.url} in time") from None
            except httpx.HTTPError as e:
                raise NodeError(f"cannot reach bitcoind at {self.url}: {e!r}") from None
            if resp.status_code == 401:
                if attempt == 1 and self._cookie is not None:
                    continue  # the node restarted and wrote a new cookie
                raise NodeError(f"bitcoind at {self.url} refused the RPC credentials (HTTP 401)")
            break
        try:
            # bitcoind sends errors with HTTP 404/500 and a JSON body; parse before status.
            payload = json.loads(resp.content, parse_float=Decimal)
        except ValueError:
            raise NodeError(
                f"bitcoind {method}: HTTP {resp.status_code}, not JSON: {resp.text[:200]!r}"
            ) from None
        err = payload.get("error") if isinstance(payload, dict) else None
        if err:
            raise RpcError(method, int(err.get("code", 0)), str(err.get("message", err)))
        if not isinstance(payload, dict) or "result" not in payload:
            raise NodeError(f"bitcoind {method}: malformed reply {resp.text[:200]!r}")
        return payload["result"]


__all__ = ["RpcClient", "RpcError", "btc_to_sats"]
