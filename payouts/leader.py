"""What only the elected leader of a cluster runs (docs/deployment.md), started on election
and stopped when the lease is lost.

:class:`LeaderWork` holds the one accounting window of the pool, restored from the store
(snapshot + replay, as a restart does) on a store engine fenced with the leader's epoch
(:class:`payouts.store.leader_lease.Fence`: a write after another leader was elected is
refused). It runs, besides what :class:`payouts.served.ServedPool` runs for a single process
(settlement runner, chain follower, snapshots, retention, ledger backlog, read index):

- the share follower: every ~0.1 s (or on a ``shares`` notification) the shares the frontends
  stored since the window's newest, in id order (:meth:`payouts.window_keeper.WindowKeeper.
  follow`; why id order is commit order: :mod:`payouts.store.shares`);
- the view publisher: the window view (:mod:`payouts.published_view`) every ~1 s when it moved;
- the found-block consumer: blocks the frontends' JD servers queued (``found_blocks``),
  recorded once each (a block already recorded, by a leader that died before marking it, is
  only marked);
- the request consumer: what a frontend forwarded (:class:`payouts.cluster_frontend.
  LeaderRequests`): ``POST /v1/distributions`` and the operator's settlement actions
  (``POST /v1/settlements/{id}/broadcast`` and ``/fallback``), each claimed, run as the single
  process runs it (the settlement runner's own :meth:`~payouts.settlement.runner.
  SettlementRunner.broadcast` / ``fallback``) and answered with its result or its error.

Every distribution it publishes is announced on the ``distribution`` channel as ``id`` or
``id:settled`` (after a found block: PR #203 §10), so every JD server pushes it within 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from payouts.distribution.fitting import FittedDistribution
from payouts.errors import DuplicateKeyError, PayoutsError
from payouts.node.interface import Node, NodeError
from payouts.published_view import view_body
from payouts.served import ServedPool
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.action_wire import report_json
from payouts.store import notify
from payouts.store.cluster import (
    LeaderRequest,
    QueuedBlock,
    RequestClaims,
    answer_request,
    mark_found_block_recorded,
    open_requests,
    pending_found_blocks,
    publish_view,
    request_answer,
)
from payouts.store.engine import make_engine
from payouts.store.leader_lease import Fence, StaleLeaderError
from payouts.tx.transaction import Tx

log = logging.getLogger("payouts.cluster")

FOLLOW_EVERY_SEC = 0.1
VIEW_EVERY_SEC = 1.0
#: How often the view's template revenue (the members' operator page prices at it) is asked of
#: the node: one getblocktemplate per this many seconds.
REVENUE_EVERY_SEC = 10.0
REVENUE_TIMEOUT_SEC = 2.0  # a node that hangs delays the next view by this much at most
QUEUE_POLL_SEC = 1.0


@dataclass(frozen=True, slots=True)
class QueuedFound:
    """A queued found block as :meth:`ServedPool.record_found_block` takes it."""

    block_hash: bytes
    height: int
    distribution_id: int | None
    revenue: int
    coinbase: Tx | None


def found_payload(block_hash: bytes, height: int, distribution_id: int | None, revenue: int,
                  coinbase: Tx | None) -> dict[str, object]:
    """The queue payload of a found block (``found_blocks.payload``)."""
    return {"height": height, "distribution_id": distribution_id, "revenue": revenue,
            "coinbase": None if coinbase is None else coinbase.serialize().hex(),
            "block_hash": block_hash.hex()}


def _found(q: QueuedBlock) -> QueuedFound:
    p = q.payload
    cb = p.get("coinbase")
    return QueuedFound(q.block_hash, int(p["height"]), p.get("distribution_id"),
                       int(p["revenue"]), None if cb is None else Tx.parse(bytes.fromhex(cb)))


class LeaderWork:
    """The leader's half of a cluster process (module docstring)."""

    def __init__(self, settings: Settings, url: str, epoch: int, node: Node, *,
                 on_stale: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.settings = settings
        self.epoch = epoch
        self.engine: Engine = make_engine(url)
        self.fence = Fence(self.engine, epoch)
        self._on_stale = on_stale
        self.service = PoolService(settings, engine=self.engine, migrate=False)
        self.service.window.shared_store = True
        self.pool = ServedPool(settings, service=self.service, node=node, jds=False,
                               on_published=self._announce)
        self._tasks: list[asyncio.Task[None]] = []
        self._view_key: tuple[object, ...] | None = None
        self._revenue: int | None = None
        self._claims = RequestClaims(url)

    # -- start / stop -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.pool.start()
        self.service.window.follow()
        if self.service.latest_distribution() is None:
            try:
                template = await self.pool.node.block_template()
            except NodeError as e:  # the JD servers wait for the first one; POST publishes
                log.warning("no first distribution: the node does not answer (%s)", e.reason)
            else:
                self.pool.publish_distribution(template.coinbase_value)
        loop = asyncio.get_running_loop()
        for name, fn in (("share-follower", self._follow_loop), ("view", self._view_loop),
                         ("found-blocks", self._found_loop), ("requests", self._request_loop)):
            self._tasks.append(loop.create_task(fn(), name=name))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.pool.stop()
        self.fence.remove()
        self.engine.dispose()

    # -- what the leader announces ------------------------------------------------------------

    def _announce(self, fitted: FittedDistribution, settlement: bool) -> None:
        did = fitted.distribution.distribution_id
        with self.engine.begin() as conn:
            notify.notify(conn, notify.DISTRIBUTION, f"{did}:settled" if settlement else str(did))
        log.info("published distribution %d%s", did, " (after a settlement)" if settlement
                 else "")

    # -- loops --------------------------------------------------------------------------------

    async def _guard(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        """Run ``step``; a stale-leader refusal steps down, anything else is logged."""
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except StaleLeaderError as e:
            log.error("%s: %s", name, e.message)
            asyncio.get_running_loop().create_task(self._on_stale())
            await asyncio.sleep(3600)
        except Exception:
            log.exception("%s failed; retrying", name)
            await asyncio.sleep(0.5)

    async def _follow_loop(self) -> None:
        while True:
            await self._guard("share follower",
                              lambda: asyncio.to_thread(self.service.window.follow))
            await asyncio.sleep(FOLLOW_EVERY_SEC)

    def _publish_view(self) -> None:
        w = self.service.window
        node = self.pool.chain.status
        key = (w.last_share_id, w.last_event_id, w.node_bits, node.reachable, node.tip_height,
               node.error, self._revenue)
        if key == self._view_key:
            return
        publish_view(self.engine, self.epoch, view_body(self.service, node, self._revenue))
        self._view_key = key

    async def _template_revenue(self) -> None:
        try:
            template = await asyncio.wait_for(self.pool.node.block_template(),
                                              REVENUE_TIMEOUT_SEC)
            self._revenue = template.coinbase_value
        except (NodeError, TimeoutError):
            self._revenue = None  # unknown: members price at the newest block's revenue

    async def _view_loop(self) -> None:
        asked = -REVENUE_EVERY_SEC
        while True:
            # The view first (a new leader's first one ends the failover for the frontends);
            # T rides with the next one.
            await self._guard("view publisher", lambda: asyncio.to_thread(self._publish_view))
            now = asyncio.get_running_loop().time()
            if now - asked >= REVENUE_EVERY_SEC:
                asked = now
                await self._guard("template revenue", self._template_revenue)
            await asyncio.sleep(VIEW_EVERY_SEC)

    async def _record_queued(self) -> None:
        for q in await asyncio.to_thread(pending_found_blocks, self.engine):
            found = _found(q)
            try:
                await self.pool.record_found_block(found)
            except DuplicateKeyError:
                log.info("queued block %s was recorded already", q.block_hash[::-1].hex())
            await asyncio.to_thread(mark_found_block_recorded, self.engine, q.id)

    async def _found_loop(self) -> None:
        listener = notify.Listener(self.engine, [notify.FOUND_BLOCK])
        try:
            while True:
                await self._guard("found-block consumer", self._record_queued)
                await asyncio.to_thread(listener.wait, QUEUE_POLL_SEC)
        finally:
            listener.close()

    # -- forwarded requests -------------------------------------------------------------------

    async def _publish(self, body: dict[str, Any]) -> dict[str, Any]:
        fitted = await asyncio.to_thread(self.pool.publish_distribution,
                                         int(body["estimated_revenue"]))
        return {"distribution_id": fitted.distribution.distribution_id}

    async def _broadcast(self, body: dict[str, Any]) -> dict[str, Any]:
        return report_json(await self.pool.runner.broadcast(int(body["block_id"])))

    async def _fallback(self, body: dict[str, Any]) -> dict[str, Any]:
        return report_json(await self.pool.runner.fallback(int(body["block_id"])))

    def _handler(self, kind: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        """What answers a request of ``kind`` (every kind of ``leader_requests``): the same
        call the single process's route makes."""
        handlers = {"publish": self._publish, "broadcast": self._broadcast,
                    "fallback": self._fallback}
        try:
            return handlers[kind]
        except KeyError:
            raise PayoutsError(f"unknown leader request kind {kind!r}",
                               code="invalid-input") from None

    async def _act(self, req: LeaderRequest) -> tuple[dict[str, Any] | None,
                                                      dict[str, Any] | None]:
        """Run ``req``: ``(result, None)``, or ``(None, error)`` with the error the single
        process's API would render (its code, message, context, and status when it fixed
        one; anything unexpected is 500 ``internal-error`` there, and here)."""
        try:
            return await self._handler(req.kind)(req.body), None
        except StaleLeaderError:
            raise
        except PayoutsError as e:
            status = getattr(e, "status", None)
            return None, {"code": e.code, "message": e.message, "context": e.context,
                          "status": status if isinstance(status, int) else None}
        except Exception:
            log.exception("forwarded %s request %d failed", req.kind, req.id)
            return None, {"code": "internal-error", "context": {}, "status": 500,
                          "message": "internal error; see the server log"}

    async def _answer_requests(self) -> None:
        for req in await asyncio.to_thread(open_requests, self.engine):
            # The claim first, then a second look: a frontend that gave up on the request
            # closed it before the claim (then it is answered: skip), or cannot close it now.
            if not await asyncio.to_thread(self._claims.claim, req.id):
                continue
            try:
                if await asyncio.to_thread(request_answer, self.engine, req.id) is not None:
                    continue
                result, error = await self._act(req)
                await asyncio.to_thread(answer_request, self.engine, req.id,
                                        result=result, error=error)
            finally:
                await asyncio.to_thread(self._claims.release, req.id)

    async def _request_loop(self) -> None:
        listener = notify.Listener(self.engine, [notify.REQUEST])
        try:
            while True:
                await self._guard("request consumer", self._answer_requests)
                await asyncio.to_thread(listener.wait, QUEUE_POLL_SEC)
        finally:
            listener.close()
            self._claims.close()


__all__ = ["LeaderWork", "QueuedFound", "found_payload"]
