"""The composition root of ``payouts serve``: one place that creates the store, the pool
service, the node, the settlement runner, the JD server and the API, and connects them.

Every connection is made here, explicitly, and nowhere else:

- the settlement mode is built once from the settings
  (:func:`~payouts.settlement.modes.mode_from_settings`) and the same object goes to the JD
  server (what it announces with 0x4003 and checks in every declared coinbase) and to the runner
  (what it settles);
- a block the JD server gets accepted comes to :meth:`ServedPool.record_found_block`, which
  records it (:meth:`~payouts.service.PoolService.record_block`: block and ledger lines in one
  transaction), hands it to the runner (:meth:`~payouts.settlement.runner.SettlementRunner.track`)
  and publishes a fresh distribution that replaces every earlier one at once (sv2-spec PR #203
  §10: no grace window across a settlement);
- a distribution published through the API (``POST /v1/distributions``) goes through
  :meth:`ServedPool.publish_distribution`, which stores it and pushes it to the JD clients.

Nothing below this module holds a pointer back up: the service knows no runner, the runner no
service (only :class:`~payouts.settlement.runner.SettledPool`), the JD server only the callable
it was given for found blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from payouts.chain_follower import ChainFollower
from payouts.crash_points import crash_point
from payouts.distribution.fitting import FittedDistribution
from payouts.errors import ConfigError
from payouts.node.factory import make_node
from payouts.node.interface import Node, NodeError
from payouts.service import PoolService, RecordedBlock
from payouts.settings import Settings
from payouts.settlement.modes import SettlementMode, check_mode_on_node, mode_from_settings
from payouts.settlement.runner import SettlementRunner
from payouts.tx.hashes import display_hex
from payouts.tx.transaction import Tx

if TYPE_CHECKING:
    from fastapi import FastAPI

    from payouts.leader import QueuedFound
    from sv2.jds.server import FoundBlock, JobDeclarationServer
    from sv2.mining.events import AcceptedShare
    from sv2.mining.server import MiningServer

log = logging.getLogger("payouts.serve")

# ServedPool(rate_limit=...) default: [api] rate_limit_per_sec and rate_limit_burst
FROM_SETTINGS: Literal["settings"] = "settings"


class Serving:
    """What ``payouts serve`` runs, as one process or as a member of a cluster
    (:class:`ServedPool`, :class:`payouts.cluster_member.ClusterMember`): started, served over
    HTTP until uvicorn exits, stopped."""

    settings: Settings
    service: PoolService

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def run(self, server: Any) -> None:
        """Start, run ``server`` (a ``uvicorn.Server`` on :attr:`app`) until it exits, stop.

        uvicorn catches SIGTERM/SIGINT and, once it has shut down, raises the signal again to
        end the process the default way, which would skip :meth:`stop` (no last snapshot, JD
        server and poller not stopped). So while serving, those signals land in a handler of
        ours that only notes them; uvicorn still sees them first and shuts down; :meth:`stop`
        runs; then the noted signal is raised with the default action, as uvicorn meant."""
        noted: list[int] = []
        previous = _note_signals(noted)
        metrics_task: asyncio.Task[Any] | None = None
        metrics_server = self._metrics_server(server)
        try:
            await self.start()
            log.info("serving the API on http://%s:%d (network %s, database %s)",
                     server.config.host, server.config.port, self.settings.network,
                     self.settings.effective_database_url.split("@")[-1])
            if metrics_server is not None:
                metrics_task = asyncio.get_running_loop().create_task(metrics_server.serve())
                log.info("serving /metrics on %s ([metrics] listen)", self.settings.metrics.listen)
            await server.serve()
        finally:
            if metrics_server is not None and metrics_task is not None:
                metrics_server.should_exit = True
                await metrics_task
            await self.stop()
            _restore_signals(previous)
        for sig in noted[:1]:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    def _metrics_server(self, api_server: Any) -> Any:
        """A second uvicorn server for ``[metrics] listen`` (None when unset), configured like
        the API's (``api_server``)."""
        listen = self.settings.metrics.listen
        if listen is None:
            return None
        import uvicorn

        from api.app import create_metrics_app

        host, _, port = listen.rpartition(":")
        return uvicorn.Server(uvicorn.Config(
            create_metrics_app(self.service), host=host.strip("[]"), port=int(port),
            access_log=False, log_config=None, log_level=api_server.config.log_level))


class ServedPool(Serving):
    """Everything ``payouts serve`` runs, wired together (module docstring).

    ``service``, ``node`` and ``runner`` may be given (tests, the demo); otherwise they are made
    from ``settings``. A node made here is closed by :meth:`stop`; a given one is the caller's.
    ``rate_limit``: the API's public requests/s per client (None: no limit; default ``[api]
    rate_limit_per_sec`` with ``rate_limit_burst``, 0 meaning no limit).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        service: PoolService | None = None,
        node: Node | None = None,
        runner: SettlementRunner | None = None,
        rate_limit: float | Literal["settings"] | None = FROM_SETTINGS,
        jds: bool = True,
        on_published: Callable[[FittedDistribution, bool], None] | None = None,
    ) -> None:
        self.settings = settings
        # A cluster's leader (payouts.leader) runs no JD server of its own (the frontends do)
        # and announces what it publishes to them (``on_published(fitted, settlement)``).
        self._with_jds = jds
        self._on_published = on_published
        self.service = service if service is not None else PoolService(settings)
        self._owns_node = node is None
        self.node = node if node is not None else make_node(settings)
        self.mode: SettlementMode = runner.mode if runner is not None else mode_from_settings(
            settings)
        self.runner = runner if runner is not None else SettlementRunner(
            self.service, self.node, mode=self.mode)
        self.chain = ChainFollower(self.node, self.service.window)
        self.jds: JobDeclarationServer | None = None
        self.mining: MiningEndpoint | None = None
        self._snapshots: asyncio.Task[None] | None = None
        self._pruning: asyncio.Task[None] | None = None
        self._ledger: asyncio.Task[None] | None = None
        self._dashboards: asyncio.Task[None] | None = None
        self._remove_metrics: Callable[[], None] | None = None
        api = settings.api
        self._rate_limit = (api.rate_limit_per_sec or None) if isinstance(rate_limit, str) \
            else rate_limit
        self._rate_burst = api.rate_limit_burst
        self._app: FastAPI | None = None
        self._stopped = False

    # -- the API ------------------------------------------------------------------------------

    @property
    def app(self) -> FastAPI:
        """The REST API over this pool (built on first use: a JD-only caller needs none)."""
        if self._app is None:
            from api.app import create_app

            self._app = create_app(self.service, runner=self.runner, publisher=self,
                                   rate_limit=self._rate_limit, rate_burst=self._rate_burst,
                                   node_status=lambda: self.chain.status)
        return self._app

    # -- what the pieces ask of each other ----------------------------------------------------

    def publish_distribution(self, estimated_revenue: int, *,
                             settlement: bool = False) -> FittedDistribution:
        """Fit and store a new distribution, then push it to every JD client (``settlement``:
        after a found block, with no grace window for earlier ones, PR #203 §10)."""
        fitted = self.service.publish_distribution(estimated_revenue)
        if self.jds is not None:
            self.jds.publish(fitted, settlement=settlement)
        if self.mining is not None:
            self.mining.distribution_changed()
        if self._on_published is not None:
            self._on_published(fitted, settlement)
        return fitted

    async def record_found_block(self, found: FoundBlock | QueuedFound) -> None:
        """A block the JD server got accepted (or found already in the node's active chain):
        :meth:`block_found`."""
        await self.block_found(block_hash=found.block_hash, height=found.height,
                               distribution_id=found.distribution_id, revenue=found.revenue,
                               coinbase=found.coinbase)

    async def block_found(self, *, block_hash: bytes, height: int, distribution_id: int | None,
                          revenue: int, coinbase: Tx | None) -> RecordedBlock | None:
        """The one entry point of every path that reports a found block (the JD server's
        PushSolution, the Mining Protocol endpoint's block shares, the start-up recovery):
        record it with its ledger lines, track its settlement, and publish the distribution
        that follows it (PR #203 §10). Keyed by block hash: a block reported again is neither
        settled nor followed twice (its first record is returned). None for a base-spec job
        (no distribution: it pays the pool alone, nothing to settle)."""
        if distribution_id is None:
            return None
        if self.mining is not None:  # before the refresh the new tip starts (PR #203 §10)
            self.mining.server.distribution_paid(distribution_id)
        crash_point("found")
        # In a worker thread: at 100k miners settling and writing a block is ~100 ms of work
        # that must not stop the event loop (the API, the JD and Mining Protocol servers).
        recorded = await asyncio.to_thread(
            self.service.record_block, distribution_id=distribution_id,
            revenue=revenue, block_hash=block_hash, height=height)
        if not recorded.first:
            log.info("block %s at height %d was already recorded (block %d): reported again, "
                     "nothing changes", display_hex(block_hash), height, recorded.block.id)
            return recorded
        crash_point("recorded")
        self.runner.track(recorded.block, recorded.fitted, coinbase)
        log.info("block %s at height %d recorded for settlement (distribution %d)",
                 display_hex(block_hash), height, distribution_id)
        template = await self.node.block_template()
        self.publish_distribution(template.coinbase_value, settlement=True)
        return recorded

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the mode against the node (a mode needing CTV is refused where BIP-119 is not
        active), start the JD server when ``[jds] enabled``, start the settlement poller."""
        # Threads (the API's share ingest, a block being recorded, the ledger backlog) take
        # turns on the GIL every 1 ms instead of 5 ms: an ingest request does not wait behind
        # a long pure-Python step of another thread (issue #11: ingest p99 <= 50 ms while a
        # 100k-miner block is recorded).
        sys.setswitchinterval(0.001)
        m = self.mode.musig2
        signer = "here" if self.runner.lifecycle.fallback_signer else "elsewhere"
        detail = "" if m is None else (
            f" (committee of {len(m.committee)}, fallback after {m.fallback_timelock} blocks, "
            f"signed {signer}, CTV leaf {'on' if m.ctv_leaf else 'off'})")
        log.info("settlement lifecycle in %s mode%s, polling the node every %.1f s",
                 self.mode.name, detail, self.runner.interval)
        r = self.service.window.restored
        log.info("accounting window restored %s: %d shares and %d chain events replayed",
                 f"from snapshot {r.snapshot_id}" if r.snapshot_id else "from the store",
                 r.shares, r.events)
        await self.follow_chain()
        await check_mode_on_node(self.mode, self.node, "payouts serve")
        await self.recover_found_blocks()
        if self.settings.jds.enabled and self._with_jds:
            await self.start_jds()
            if self.settings.mining.enabled:
                await self.start_mining()
        self.runner.start()
        loop = asyncio.get_running_loop()
        self._snapshots = loop.create_task(self._snapshot_loop(), name="snapshots")
        if self.settings.retention.enabled:
            self._pruning = loop.create_task(self._retention_loop(), name="retention")
        self._ledger = loop.create_task(self._backlog_loop(), name="ledger-backlog")
        self._dashboards = loop.create_task(self._dashboard_index(), name="dashboard-index")

    async def recover_found_blocks(self) -> list[RecordedBlock]:
        """Start-up recovery of what a crash between two commits can leave (issue #13):

        - blocks the node's active chain holds that pay one of the recent distributions in
          this pool's mode but were never recorded (the process died after the node accepted
          the block, before its record committed): recorded now, through :meth:`block_found`
          (:mod:`payouts.settlement.recovery`);
        - a recorded block with no settlement row is tracked by the runner's first step
          (:meth:`~payouts.settlement.runner.SettlementRunner.track_untracked`), before any
          operator action (the actions track first too);
        - a block recorded on the newest distribution, whose following distribution was never
          published (the process died in between): a fresh one is published now, so the
          JD server does not serve the paid window again (PR #203 §10).

        A node that cannot be reached skips the first (logged); the next start tries again."""
        from payouts.settlement.recovery import unrecorded_blocks

        done: list[RecordedBlock] = []
        blocks = await asyncio.to_thread(self.service.blocks)
        try:
            missed = await unrecorded_blocks(
                self.node, self.mode, self.service.recent_distributions(),
                above_height=max((b.height for b in blocks), default=0),
                recorded={b.block_hash for b in blocks})
        except NodeError as e:
            log.warning("could not look for found blocks left unrecorded (the node: %s)",
                        e.reason)
            missed = []
        for b in missed:
            log.warning("block %s at height %d pays distribution %d but was never recorded "
                        "(the process stopped in between): recording it now",
                        display_hex(b.block_hash), b.height, b.distribution_id)
            rec = await self.block_found(block_hash=b.block_hash, height=b.height,
                                         distribution_id=b.distribution_id, revenue=b.revenue,
                                         coinbase=b.coinbase)
            if rec is not None:
                done.append(rec)
        latest = self.service.latest_distribution()
        paid = [b.distribution_id for b in await asyncio.to_thread(self.service.blocks)
                if b.distribution_id is not None and b.status != "orphaned"]
        if latest is not None and paid and latest.distribution.distribution_id <= max(paid):
            template = await self.node.block_template()
            fresh = self.publish_distribution(template.coinbase_value, settlement=True)
            log.warning("distribution %d was paid by a recorded block but no distribution "
                        "followed it (the process stopped in between): published %d",
                        latest.distribution.distribution_id,
                        fresh.distribution.distribution_id)
        return done

    async def _dashboard_index(self) -> None:
        """The pages' read index (payouts.dashboard_index), and the node's status for
        /metrics and the operator page while it runs."""
        from api import metrics
        from payouts import dashboard_index

        async def revenue() -> int:
            return (await self.node.block_template()).coinbase_value

        remove = metrics.set_node_source(lambda: self.chain.status, revenue)
        try:
            await dashboard_index.run(self.service)
        finally:
            remove()

    async def _backlog_loop(self) -> None:
        """Write out the ledger backlog (a large block's credits) a chunk at a time, each its
        own short transaction, resting as long as each chunk took: the database's writer (one,
        on SQLite) is free at least half the time, so share ingest never waits long for it."""
        from payouts.store.ledger import materialize_backlog

        while True:
            t = time.perf_counter()
            try:
                n = await asyncio.to_thread(materialize_backlog, self.service.engine)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing out the ledger backlog failed; retrying")
                n = 0
            await asyncio.sleep(time.perf_counter() - t if n else 0.5)

    async def _retention_loop(self) -> None:
        """Prune what [retention] says is old, every ``interval_sec`` (docs/retention.md)."""
        from payouts.retention import prune

        while True:
            await asyncio.sleep(self.settings.retention.interval_sec)
            try:
                await asyncio.to_thread(prune, self.service)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention run failed; retrying at the next interval")

    async def follow_chain(self) -> None:
        """Learn the network difficulty before serving, then follow every new tip. A node that
        cannot be reached now is fatal only when no difficulty is known at all (first start,
        no pin): the window would otherwise be silently wrong."""
        window = self.service.window
        try:
            await self.chain.sync_once()
        except NodeError as e:
            if window.node_bits is None and self.settings.accounting.pin_difficulty is None:
                raise ConfigError(
                    f"the node is unreachable ({e.reason}) and no network difficulty is known "
                    "yet: the TIDES window cannot be placed; start the node first") from None
            log.warning("serving with the last known network difficulty until the node "
                        "answers")
        self.chain.start()

    async def _snapshot_loop(self) -> None:
        """Save the accounting snapshot every ``[accounting] snapshot_interval_sec``."""
        every = self.settings.accounting.snapshot_interval_sec
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self.service.window.take_snapshot)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next try may succeed; restarts just replay more
                log.exception("saving the accounting snapshot failed")

    async def start_jds(self) -> JobDeclarationServer:
        """The JD server on this pool's node, in this pool's mode, serving the newest stored
        distribution (a first one is published from the node's template when there is none);
        its declaration counters feed /metrics."""
        from api import metrics
        from sv2.jds import JobDeclarationServer
        from sv2.jds.limits import RequestLimits

        fitted = self.service.latest_distribution()
        if fitted is None:
            template = await self.node.block_template()
            fitted = self.service.publish_distribution(template.coinbase_value)
        jds = JobDeclarationServer.from_settings(
            self.settings, self.node, fitted, mode=self.mode, on_block=self.record_found_block,
            request_limits=RequestLimits.from_settings(self.settings.jds, self.service.engine),
            # Coinbase-only JD connections (no DECLARE_TX_DATA) only where this process's
            # Mining Protocol server checks their SetCustomMiningJob (sv2.coinbase_only).
            coinbase_only=self.settings.mining.enabled)
        await jds.start()
        self.jds = jds
        remove_declarations = metrics.add_declaration_source(lambda: jds.stats)
        remove_server = metrics.add_server("jd", jds)

        def remove() -> None:
            remove_declarations()
            remove_server()

        self._remove_metrics = remove
        log.info("JD server listening on %s:%d (server id %r, token tag %s; Noise; "
                 "extensions %s; distribution %d)", *jds.address, jds.server_id,
                 jds.tokens.tag.hex(), ", ".join(f"{e:#06x}" for e in jds.supported),
                 fitted.distribution.distribution_id)
        return jds

    async def start_mining(self) -> MiningServer:
        """The Mining Protocol server beside the JD server (``[mining]``, :func:`start_mining`):
        accepted shares are stored and accounted here, blocks go to
        :meth:`record_found_block`."""
        jds = self.jds
        if jds is None:
            raise ConfigError("mining.enabled needs jds.enabled")
        self.mining = await start_mining(self.settings, jds, self.node, self.service,
                                         on_block=self.record_found_block)
        return self.mining.server

    async def stop(self) -> None:
        """Stop the poller and the JD server, save a last snapshot (a restart then replays
        nothing), unregister the metrics, close a node made here."""
        if self._stopped:
            return
        self._stopped = True
        await self.runner.stop()
        await self.chain.stop()
        started_snapshots = self._snapshots is not None
        for task in (self._dashboards, self._ledger, self._pruning, self._snapshots):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._dashboards = self._ledger = self._pruning = self._snapshots = None
        if started_snapshots:
            try:
                await asyncio.to_thread(self.service.window.take_snapshot)
            except Exception:
                log.exception("saving the accounting snapshot at shutdown failed")
        if self.mining is not None:
            await self.mining.stop()
            self.mining = None
        if self.jds is not None:
            await self.jds.stop()
            self.jds = None
        if self._remove_metrics is not None:
            self._remove_metrics()
            self._remove_metrics = None
        if self._owns_node:
            await self.node.aclose()

def credit_mining_shares(service: PoolService, shares: Sequence[AcceptedShare]) -> int:
    """Credit shares the Mining Protocol server accepted as one durable batch, the same
    validated path as ``POST /v1/shares`` (:meth:`PoolService.ingest_accounts`); returns how
    many were new. A share already stored (same header hash, so the same key) is skipped.

    sv2-spec 05-Mining-Protocol.md §5.3.13 lets SubmitShares.Success cover a batch: the server
    sends it only after this returned, so every acknowledged share is durable. The columns are
    taken straight from the shares, one pass each (``benchmarks/bench_mining.py`` times this
    function, so the benchmark and ``payouts serve`` credit the same way)."""
    from payouts.accounting.shares import AccountShareBatch

    batch = AccountShareBatch(
        key=[s.key for s in shares], account=[s.account for s in shares],
        worker=[s.worker for s in shares], difficulty=[s.difficulty for s in shares],
        job_id=[str(s.job_id) for s in shares], revenue=[s.revenue for s in shares],
        time_ms=[s.time_ms for s in shares])
    return service.ingest_accounts(batch).accepted


# -- the Mining Protocol endpoint, as both composition roots start it --------------------------


class KnownAccounts:
    """``known_user`` of the Mining Protocol server (sv2-spec §5.3.2 ``user_identity``): a
    channel's user identity must be a registered miner account, since its shares are credited
    to it. Known accounts are remembered (accounts are never deleted); an unknown one is looked
    up again next time (it may have registered in between)."""

    def __init__(self, service: PoolService) -> None:
        self.service = service
        self._known: set[str] = set()

    def __call__(self, account: str) -> bool:
        if account in self._known:
            return True
        if self.service.find_miner(account) is None:
            return False
        self._known.add(account)
        return True


def share_recorder(service: PoolService
                   ) -> Callable[[Sequence[AcceptedShare]], Awaitable[None]]:
    """``on_shares`` of the Mining Protocol server: each batch of accepted shares is one
    durable :func:`credit_mining_shares` in a worker thread (the server acknowledges the
    shares only after it returns). With the window in this process (role all) the batch is
    accounted at once; on a cluster frontend it is only stored, and the leader's share
    follower accounts it, once, in id order (payouts.leader)."""

    async def record_shares(shares: Sequence[AcceptedShare]) -> None:
        await asyncio.to_thread(credit_mining_shares, service, shares)

    return record_shares


class MiningEndpoint:
    """The Mining Protocol server as ``payouts serve`` runs it, in one process
    (:class:`ServedPool`) or on a cluster member (:class:`payouts.cluster_member.ClusterMember`):
    made by :func:`start_mining`, stopped by :meth:`stop`."""

    def __init__(self, server: MiningServer, remove_metrics: Callable[[], None]) -> None:
        self.server = server
        self._remove_metrics = remove_metrics
        self._loop = asyncio.get_running_loop()

    def distribution_changed(self) -> None:
        """The JD server made a new distribution current: the pool's job is rebuilt on it now,
        not at the next template poll, so miners that do not declare stop mining a
        distribution a settlement replaced (sv2-spec PR #203 §10). Safe from any thread (a
        cluster member's distribution follower pushes from a worker thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to mine
            self._loop.call_soon_threadsafe(self.server.pool_job_soon)

    async def stop(self) -> None:
        await self.server.stop()
        self._remove_metrics()


async def start_mining(settings: Settings, jds: JobDeclarationServer, node: Node,
                       service: PoolService, *,
                       on_block: Callable[[FoundBlock], Awaitable[None]]) -> MiningEndpoint:
    """The Mining Protocol server beside ``jds`` (``[mining]``, docs/mining.md): the JD
    server's certificate and declarations (SetCustomMiningJob is checked against this JD
    server's tokens, sv2-spec §5.3.18), its current distribution for the pool's job, the pool
    tag made unique by its token tag; accepted shares go to ``service``
    (:func:`share_recorder`), blocks to ``on_block``; its connections, channels and share
    outcomes feed /metrics."""
    from api import metrics
    from sv2.listener import ListenerLimits
    from sv2.mining.pool_job import POOL_TAG
    from sv2.mining.server import MiningServer
    from sv2.mining.shared import MiningPolicy
    from sv2.mining.targets import difficulty_unit

    m = settings.mining
    host, _, port = m.listen.rpartition(":")
    policy = MiningPolicy(
        shares_per_minute=m.shares_per_minute, initial_difficulty=m.initial_difficulty,
        retarget_interval=m.retarget_interval_sec,
        extranonce_prefix_size=m.extranonce_prefix_size, extranonce_size=m.extranonce_size,
        difficulty_unit=difficulty_unit(settings.network))
    limits = ListenerLimits(
        idle_timeout=m.idle_timeout_sec, max_connections=m.max_connections,
        max_connections_per_address=m.max_connections_per_address or None)

    async def block(found: FoundBlock) -> None:
        # Synchronously, before the pool job refresh the block's new tip started can run: no
        # pool job on the distribution this block paid (PR #203 §10).
        if found.distribution_id is not None:
            mp.distribution_paid(found.distribution_id)
        await on_block(found)

    mp = MiningServer(
        identity=jds.noise_identity, node=node, policy=policy,
        known_user=KnownAccounts(service), on_shares=share_recorder(service), jds=jds,
        on_block=block, host=host.strip("[]"), port=int(port), limits=limits,
        batch_size=m.share_batch_size, flush_interval=m.share_flush_interval_sec,
        pool_tag=POOL_TAG + jds.tokens.tag)
    await mp.start()
    endpoint = MiningEndpoint(mp, metrics.add_server("mining", mp))
    log.info("Mining Protocol server listening on %s:%d (Noise; vardiff to %g shares/min)",
             *mp.address, m.shares_per_minute)
    return endpoint


_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _note_signals(noted: list[int]) -> dict[int, Any]:
    """Handlers that record SIGINT/SIGTERM (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, lambda s, _f: noted.append(s)) for sig in _EXIT_SIGNALS}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


__all__ = ["KnownAccounts", "MiningEndpoint", "ServedPool", "Serving",
           "credit_mining_shares", "share_recorder", "start_mining"]
