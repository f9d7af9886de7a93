"""How ``payouts serve`` runs the API over HTTP: uvicorn with httptools, plus a deadline for a
request's headers.

uvicorn closes a connection that sends nothing for ``timeout_keep_alive`` seconds, but a client
that sends a header byte now and then is never closed: 2,000 such connections held 2,000
sockets and their buffers (issue #13). :class:`HeaderDeadlineProtocol` gives every request
``header_timeout`` seconds, from the connection (or the end of the previous response) to the
end of its headers; bytes do not extend it. A request whose headers are complete is then the
application's (the body limit is :class:`api.app.BodyLimitMiddleware`'s).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    header_timeout: float = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's headers get their own deadline, unless a pipelined request is
        # already being served (its headers were complete).
        if not self.transport.is_closing() and (self.cycle is None
                                                or self.cycle.response_complete):
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_config(app: Any, host: str, port: int, *, log_level: str = "info",
                   header_timeout: float = HEADER_TIMEOUT_S) -> Any:
    """The ``uvicorn.Config`` of ``payouts serve``: no access log of uvicorn's own (the API
    writes one JSON line per request), the logging set up by the caller, the header deadline."""
    import uvicorn

    protocol = type("HeaderDeadline", (HeaderDeadlineProtocol,),
                    {"header_timeout": header_timeout})
    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                          log_level=log_level, http=protocol)


__all__ = ["HEADER_TIMEOUT_S", "HeaderDeadlineProtocol", "uvicorn_config"]
