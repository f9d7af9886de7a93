"""Falling back when the pool refuses a job (sv2-spec 06-Job-Declaration-Protocol.md §6.4.5:
"should trigger fallback to another pool+JDS or to solo mining"): the ``fallback`` event, the
list of events and the miner's callback."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from sv2.client import ClientSession
from sv2.jdc.errors import DeclarationRejected, FallbackEvent
from sv2.jdc.jobs import JobCoinbase
from sv2.template import JobTemplate

log = logging.getLogger(__name__)

OnFallback = Callable[[FallbackEvent], Awaitable[None] | None]


class FallbackHandling(ClientSession):
    """``fallback`` is set (and stays set) once any declaration has failed for good."""

    fallback: asyncio.Event
    fallback_events: list[FallbackEvent]
    on_fallback: OnFallback | None

    async def _emit_fallback(self, event: FallbackEvent) -> None:
        self.fallback_events.append(event)
        self.fallback.set()
        self._count(f"fallback:{event.code}")
        self._say(f"fallback: {event.code} {event.details}".rstrip())
        if self.on_fallback is not None:
            try:
                res = self.on_fallback(event)
                if inspect.isawaitable(res):
                    await res
            except Exception:  # the miner's handler must not break the client
                log.exception("JDC: fallback callback failed")

    async def _give_up(
        self,
        code: str,
        details: str,
        template: JobTemplate,
        coinbase: JobCoinbase | None,
        attempts: int,
    ) -> DeclarationRejected:
        ev = FallbackEvent(
            code,
            details,
            template,
            coinbase,
            coinbase.distribution_id if coinbase else None,
            attempts,
        )
        await self._emit_fallback(ev)
        return DeclarationRejected(ev)


__all__ = ["FallbackHandling", "OnFallback"]
