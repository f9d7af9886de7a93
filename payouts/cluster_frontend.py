"""A cluster frontend's links to the leader (docs/deployment.md): requests it forwards, and
the distributions it follows.

- :class:`LeaderRequests`: the one path what only the leader may do is forwarded by: stored as
  a leader request; the leader answers it (:mod:`payouts.leader`) and NOTIFYs the reply; no
  answer within ``[cluster] request_timeout_sec`` is 503 ``no-leader`` (and the request is
  closed, so a leader elected later does not act on it behind the caller's back). Its users:
  :class:`ForwardingPublisher` (``POST /v1/distributions``) and
  :class:`ForwardedSettlementActions` (``POST /v1/settlements/{id}/broadcast`` and
  ``/fallback``).
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
from typing import Any

from sqlalchemy import Engine, text

from payouts.distribution.fitting import FittedDistribution
from payouts.errors import ForwardedError, PayoutsError
from payouts.service import PoolService
from payouts.settlement.action_wire import report_from_json
from payouts.settlement.runner import ActionReport
from payouts.store import notify
from payouts.store import repositories as repo
from payouts.store.cluster import close_unclaimed, request_answer, submit_request

log = logging.getLogger("payouts.cluster")

FOLLOW_POLL_SEC = 0.5


class NoLeaderError(PayoutsError):
    """No leader answered a forwarded request in time (none elected, or it is failing
    over)."""

    code = "no-leader"


def forwarded_error(error: dict[str, Any]) -> ForwardedError:
    """The leader's error answer as the exception the leader raised: same code, message,
    context and (when it fixed one) status, so the API renders the problem a single process
    renders."""
    status = error.get("status")
    return ForwardedError(str(error.get("message", "")), code=str(error["code"]),
                          status=None if status is None else int(status),
                          **error.get("context", {}))


class LeaderRequests:
    """The one path a frontend forwards a request to the leader by (module docstring): queue
    it in ``leader_requests``, wait for the answer (a NOTIFY on ``reply`` wakes the wait, a
    0.5 s poll catches a lost one), and return the result or raise the leader's error.

    No answer within ``timeout`` seconds: the request is closed (503 ``no-leader``) unless a
    leader has claimed it (:func:`~payouts.store.cluster.close_unclaimed`); then it is acting
    and its answer is awaited up to another ``timeout``, after which 503 ``no-leader`` says so
    (the request stays open: the leader's outcome is in the store, and a retry of a coalesced
    kind waits for that same request rather than acting again)."""

    def __init__(self, engine: Engine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout

    def forward(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        listener = notify.Listener(self.engine, [notify.REPLY])
        try:
            listener.wait(0.0)  # LISTEN before the request exists: no reply can be missed
            rid = submit_request(self.engine, kind, body)
            answer = self._wait(rid, listener)
        finally:
            listener.close()
        result, error = answer
        if error is not None:
            raise forwarded_error(error)
        assert result is not None
        return result

    def _wait(self, rid: int, listener: notify.Listener
              ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        deadline = time.monotonic() + self.timeout
        claimed_until: float | None = None
        while True:
            answer = request_answer(self.engine, rid)
            if answer is not None:
                return answer
            now = time.monotonic()
            if now >= deadline and claimed_until is None:
                closed = close_unclaimed(self.engine, rid, {
                    "code": "no-leader", "message": "timed out", "context": {}})
                if closed:
                    raise NoLeaderError(
                        f"no leader answered within {self.timeout:g} s; retry shortly")
                if closed is None:  # a leader is acting on it: its answer is coming
                    claimed_until = now + self.timeout
                    log.info("request %d: the leader is acting on it; waiting for its answer",
                             rid)
                continue
            if claimed_until is not None and now >= claimed_until:
                raise NoLeaderError(
                    f"the leader took request {rid} but did not answer within "
                    f"{2 * self.timeout:g} s; its outcome will show in the store (a retry "
                    "waits for the same request)", request_id=rid)
            until = claimed_until if claimed_until is not None else deadline
            listener.wait(min(0.5, max(0.0, until - now)))


class ForwardingPublisher:
    """``publish_distribution`` of a frontend: forwarded to the leader (module docstring)."""

    def __init__(self, service: PoolService, timeout: float) -> None:
        self.service = service
        self.requests = LeaderRequests(service.engine, timeout)

    def publish_distribution(self, estimated_revenue: int) -> FittedDistribution:
        result = self.requests.forward("publish", {"estimated_revenue": estimated_revenue})
        return self.service.distribution(int(result["distribution_id"]))


class ForwardedSettlementActions:
    """The operator's settlement actions (``POST /v1/settlements/{id}/broadcast`` and
    ``/fallback``) of a frontend: forwarded to the leader, whose settlement runner acts and
    answers its :class:`~payouts.settlement.runner.ActionReport` (or the problem it raised).
    Identical open requests are one (:data:`~payouts.store.cluster.COALESCED_KINDS`)."""

    def __init__(self, requests: LeaderRequests) -> None:
        self.requests = requests

    async def _act(self, kind: str, block_id: int) -> ActionReport:
        result = await asyncio.to_thread(self.requests.forward, kind, {"block_id": block_id})
        return report_from_json(result)

    async def broadcast(self, block_id: int) -> ActionReport:
        return await self._act("broadcast", block_id)

    async def fallback(self, block_id: int) -> ActionReport:
        return await self._act("fallback", block_id)


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


__all__ = ["DistributionFollower", "ForwardedSettlementActions", "ForwardingPublisher",
           "LeaderRequests", "NoLeaderError", "forwarded_error", "settled_since"]
