"""A cluster frontend's links to the leader (docs/deployment.md): requests it forwards, and
the distributions it follows.

- :class:`ForwardingPublisher`: ``POST /v1/distributions`` on a frontend is stored as a leader
  request; the leader answers it (:mod:`payouts.leader`) and NOTIFYs the reply; no answer within
  ``[cluster] request_timeout_sec`` is 503 ``no-leader`` (and the request is closed, so a
  leader elected later does not act on it behind the caller's back).
- :class:`DistributionFollower`: every distribution the leader publishes is pushed by this
  process's JD server within 1 s: a NOTIFY wakes it at once, a poll every 0.5 s catches what a
  lost notification missed. After a settlement (``id:settled``, or a block recorded on the
  distribution this server serves) the push replaces every earlier distribution with no grace
  window (PR #203 §10).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from payouts.distribution.fitting import FittedDistribution
from payouts.errors import PayoutsError
from payouts.service import PoolService
from payouts.store import notify
from payouts.store import repositories as repo
from payouts.store.cluster import answer_request, request_answer, submit_request

log = logging.getLogger("payouts.cluster")

FOLLOW_POLL_SEC = 0.5


class NoLeaderError(PayoutsError):
    """No leader answered a forwarded request in time (none elected, or it is failing
    over)."""

    code = "no-leader"


class ForwardingPublisher:
    """``publish_distribution`` of a frontend: forwarded to the leader (module docstring)."""

    def __init__(self, service: PoolService, timeout: float) -> None:
        self.service = service
        self.engine = service.engine
        self.timeout = timeout

    def publish_distribution(self, estimated_revenue: int) -> FittedDistribution:
        listener = notify.Listener(self.engine, [notify.REPLY])
        try:
            listener.wait(0.0)  # LISTEN before the request exists: no reply can be missed
            rid = submit_request(self.engine, "publish",
                                 {"estimated_revenue": estimated_revenue})
            deadline = time.monotonic() + self.timeout
            while True:
                answer = request_answer(self.engine, rid)
                if answer is None and time.monotonic() >= deadline:
                    if answer_request(self.engine, rid, error={
                            "code": "no-leader", "message": "timed out", "context": {}}):
                        raise NoLeaderError(
                            f"no leader answered within {self.timeout:g} s; retry shortly")
                    answer = request_answer(self.engine, rid)
                if answer is not None:
                    break
                listener.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        finally:
            listener.close()
        result, error = answer
        if error is not None:
            raise PayoutsError(str(error.get("message", "")), code=str(error["code"]),
                               **error.get("context", {}))
        assert result is not None
        return self.service.distribution(int(result["distribution_id"]))


def settled_since(engine: Engine, distribution_id: int) -> bool:
    """True when a block was recorded on ``distribution_id`` or a later one."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM blocks WHERE distribution_id >= :d LIMIT 1"),
                            {"d": distribution_id}).first() is not None


class DistributionFollower:
    """Push what the leader publishes through ``push(fitted, settlement)`` (module
    docstring), starting after ``current`` (the id the JD server serves)."""

    def __init__(self, service: PoolService, current: int,
                 push: Callable[[FittedDistribution, bool], None]) -> None:
        self.service = service
        self.current = current
        self.push = push
        self._task: asyncio.Task[None] | None = None
        self._listener = notify.Listener(service.engine, [notify.DISTRIBUTION])

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="distributions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._listener.close()

    def catch_up(self, notes: list[tuple[str, str]]) -> FittedDistribution | None:
        """Push the newest stored distribution if it is newer than the one served."""
        last = repo.last_distribution_id(self.service.engine)
        if last is None or last <= self.current:
            return None
        settled = any(p == f"{last}:settled" for _k, p in notes) or settled_since(
            self.service.engine, self.current)
        fitted = self.service.distribution(last)
        self.push(fitted, settled)
        self.current = last
        log.info("pushing distribution %d%s", last, " (after a settlement)" if settled else "")
        return fitted

    async def _run(self) -> None:
        notes: list[tuple[str, str]] = []
        while True:
            try:
                await asyncio.to_thread(self.catch_up, notes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the published distributions failed; retrying")
            notes = await asyncio.to_thread(self._listener.wait, FOLLOW_POLL_SEC)


__all__ = ["DistributionFollower", "ForwardingPublisher", "NoLeaderError", "settled_since"]
