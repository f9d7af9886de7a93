"""The composition root of ``payouts serve`` as one process of several on one PostgreSQL
(``[cluster] role`` api, jds or leader, or all with ``[cluster] enabled``; docs/deployment.md).

Every member serves the REST API from a service without accounting state
(:class:`~payouts.service.PoolService` with ``accounting=False``): shares are validated and
stored, window reads come from the view the leader publishes, ``POST /v1/distributions`` and
the operator's settlement actions are forwarded to the leader
(:mod:`payouts.cluster_frontend`). Then, by role:

- ``jds`` (and ``all``): the JD server, serving the newest stored distribution and pushing
  each new one (:class:`~payouts.cluster_frontend.DistributionFollower`); a block it gets
  accepted is queued for the leader (``found_blocks``), never recorded here;
- ``jds`` (and ``all``) with ``[mining] enabled``: the Mining Protocol server beside that JD
  server (:func:`payouts.served.start_mining`, as in the single process): SetCustomMiningJob is
  checked against this JD server's declarations (a token of another member's JD server is
  ``invalid-mining-job-token``), the pool's job pays the distribution this member serves and is
  rebuilt when the follower pushes a new one, accepted shares are stored (the path of ``POST
  /v1/shares`` on a frontend: the leader's share follower accounts them once), and a block
  found by a share is queued for the leader like the JD server's;
- ``leader`` (and ``all``): campaigns (:class:`~payouts.leadership.Campaign`); once elected it
  runs :class:`~payouts.leader.LeaderWork`, and stops it the moment the lease is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal

from payouts.cluster_frontend import (
    DistributionFollower,
    ForwardedSettlementActions,
    ForwardingPublisher,
)
from payouts.distribution.fitting import FittedDistribution
from payouts.leader import LeaderWork, found_payload
from payouts.leadership import Campaign
from payouts.node.factory import make_node
from payouts.node.interface import Node
from payouts.published_view import PublishedWindow
from payouts.served import FROM_SETTINGS, MiningEndpoint, Serving, start_mining
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.settlement.modes import mode_from_settings
from payouts.store.cluster import queue_found_block
from payouts.store.leader_lease import holder_name
from payouts.store.migrate import upgrade
from payouts.store.notify import connect_raw

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sv2.jds.server import FoundBlock, JobDeclarationServer

log = logging.getLogger("payouts.cluster")

MIGRATE_LOCK = 0x70796D67  # 'pymg': one member migrates at a time (two-key, per schema)
FIRST_DISTRIBUTION_POLL_SEC = 0.5


def migrate_once(url: str) -> None:
    """Upgrade the schema under an advisory lock: members started together do not race
    Alembic."""
    from payouts.store.engine import make_engine

    conn = connect_raw(url)
    try:
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema()))", (MIGRATE_LOCK,))
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
    finally:
        conn.close()  # the session lock goes with the session


class ClusterMember(Serving):
    """One process of a cluster (module docstring)."""

    def __init__(self, settings: Settings, *,
                 rate_limit: float | Literal["settings"] | None = FROM_SETTINGS,
                 port: int | None = None) -> None:
        self.settings = settings
        self.role = settings.cluster.role
        self.url = settings.effective_database_url
        migrate_once(self.url)
        self.service = PoolService(settings, migrate=False, accounting=False)
        self.service.published = PublishedWindow(self.service.engine)
        self.publisher = ForwardingPublisher(self.service, settings.cluster.request_timeout_sec)
        self.runs_jds = self.role in ("jds", "all") and settings.jds.enabled
        self.runs_mining = self.runs_jds and settings.mining.enabled
        self.campaigns = self.role in ("leader", "all")
        self.node: Node | None = make_node(settings) if (
            self.runs_jds or self.campaigns) else None
        self.mode = mode_from_settings(settings)
        self.holder = holder_name(port)
        self.campaign: Campaign | None = None
        self.leader: LeaderWork | None = None
        self.jds: JobDeclarationServer | None = None
        self.mining: MiningEndpoint | None = None
        self.follower: DistributionFollower | None = None
        self._jds_task: asyncio.Task[None] | None = None
        # [api] rate_limit_per_sec / rate_limit_burst, shared by every process through the
        # database (payouts.store.rate_limits), as in ServedPool.
        self._rate_limit = (settings.api.rate_limit_per_sec or None) \
            if isinstance(rate_limit, str) else rate_limit
        self._rate_burst = settings.api.rate_limit_burst
        self._app: FastAPI | None = None
        self._remove_metrics: list[Any] = []
        self._stopped = False

    @property
    def app(self) -> FastAPI:
        if self._app is None:
            from api.app import create_app

            self._app = create_app(self.service, runner=None, publisher=self.publisher,
                                   actions=ForwardedSettlementActions(self.publisher.requests),
                                   rate_limit=self._rate_limit, rate_burst=self._rate_burst)
        return self._app

    # -- leadership ---------------------------------------------------------------------------

    async def _elected(self, epoch: int) -> None:
        assert self.node is not None and self.campaign is not None
        work = LeaderWork(self.settings, self.url, epoch, self.node,
                          on_stale=self.campaign.step_down)
        self.leader = work
        await work.start()
        log.info("leading the pool (epoch %d): window restored with %d shares",
                 epoch, work.service.accountant.share_count)

    async def _lost(self) -> None:
        work, self.leader = self.leader, None
        if work is not None:
            await work.stop()
            log.info("stepped down: the leader's work stopped (epoch %d)", work.epoch)

    # -- the JD server ------------------------------------------------------------------------

    async def _on_block(self, found: FoundBlock) -> None:
        """Queue a block this JD server (PushSolution) or this Mining Protocol server (a
        share meeting nBits) got accepted, for the leader to record: keyed by block hash, so a
        block both paths report is queued once (ARCHITECTURE invariant 8)."""
        if self.mining is not None and found.distribution_id is not None:
            # No pool job on the distribution it paid until the leader's next one arrives.
            self.mining.server.distribution_paid(found.distribution_id)
        payload = found_payload(found.block_hash, found.height, found.distribution_id,
                                found.revenue, found.coinbase)
        new = await asyncio.to_thread(queue_found_block, self.service.engine,
                                      found.block_hash, payload)
        log.info("block %s at height %d queued for the leader%s", found.block_hash[::-1].hex(),
                 found.height, "" if new else " (already queued)")

    async def _start_jds(self) -> None:
        from api import metrics
        from sv2.jds import JobDeclarationServer
        from sv2.jds.limits import RequestLimits

        assert self.node is not None
        fitted: FittedDistribution | None = None
        while fitted is None:
            fitted = await asyncio.to_thread(self.service.latest_distribution)
            if fitted is None:
                await asyncio.sleep(FIRST_DISTRIBUTION_POLL_SEC)
        jds = JobDeclarationServer.from_settings(self.settings, self.node, fitted,
                                                 mode=self.mode, on_block=self._on_block,
                                                 request_limits=RequestLimits.from_settings(
                                                     self.settings.jds, self.service.engine))
        await jds.start()
        self.jds = jds
        self._remove_metrics += [metrics.add_declaration_source(lambda: jds.stats),
                                 metrics.add_server("jd", jds)]
        log.info("JD server listening on %s:%d (server id %r, token tag %s; distribution %d)",
                 *jds.address, jds.server_id, jds.tokens.tag.hex(),
                 fitted.distribution.distribution_id)
        if self.runs_mining:
            self.mining = await start_mining(self.settings, jds, self.node, self.service,
                                             on_block=self._on_block)
        self.follower = DistributionFollower(
            self.service, fitted.distribution.distribution_id, self._push)
        self.follower.start()

    def _push(self, fitted: FittedDistribution, settled: bool) -> None:
        """A distribution the leader published: the JD server pushes it (after a settlement,
        the settled one is refused from now on, PR #203 §10, by the Mining Protocol server's
        custom-job check too, which reads the same book), and the pool's job is rebuilt on
        it."""
        assert self.jds is not None
        self.jds.publish(fitted, settlement=settled)
        if self.mining is not None:
            self.mining.distribution_changed()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        log.info("cluster member %s, role %s", self.holder, self.role)
        if self.settings.mining.enabled and not self.runs_mining:
            log.warning("[mining] enabled is ignored on role %s: the Mining Protocol server "
                        "runs beside a JD server (roles jds and all)", self.role)
        if self.campaigns:
            self.campaign = Campaign(self.url, self.holder, on_elected=self._elected,
                                     on_lost=self._lost)
            self.campaign.start()
        if self.runs_jds:
            self._jds_task = asyncio.get_running_loop().create_task(self._start_jds(),
                                                                    name="jds-start")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._jds_task is not None:
            self._jds_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._jds_task
        if self.follower is not None:
            await self.follower.stop()
        if self.campaign is not None:
            await self.campaign.stop()
        if self.mining is not None:
            await self.mining.stop()
            self.mining = None
        if self.jds is not None:
            await self.jds.stop()
            self.jds = None
        for remove in self._remove_metrics:
            remove()
        if self.node is not None:
            await self.node.aclose()
        self.service.engine.dispose()


__all__ = ["ClusterMember", "migrate_once"]
