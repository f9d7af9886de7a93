"""The pool service: the store, the accountant and the distribution wired together.

This is where durable state (SQLAlchemy store) and in-memory state (the share log and its
windows, kept by :class:`~payouts.window_keeper.WindowKeeper`) meet. Invariant 6 of
ARCHITECTURE.md: a share batch is acknowledged only after it is committed; re-sending it
changes nothing. On start the window is restored from the last snapshot plus the shares and
chain events stored after it, so the windows after a restart equal an uninterrupted run's.

Writes (shares, distributions, blocks, the runtime settings) are methods here; reads are the
read models of :mod:`payouts.views`, each exposed as a method, so the API asks the service and
nothing behind it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from payouts import dashboards, views
from payouts.accounting.accountant import Accountant
from payouts.accounting.shares import AccountShareBatch, ShareBatch
from payouts.accounting.validate import check_keys, int64_column, resolve_accounts
from payouts.distribution.columns import raw_field
from payouts.distribution.fitting import (
    Budget,
    CandidateColumns,
    DroppedColumns,
    FittedDistribution,
    fit_distribution,
)
from payouts.distribution.model import Distribution, PoolPayout
from payouts.distribution.settle import (
    BlockSettlement,
    SettlementEntries,
    dropped_columns,
    settle_block,
)
from payouts.distribution.stored import fitted_from_json, fitted_to_json
from payouts.errors import (
    ConfigError,
    DuplicateKeyError,
    PayoutsError,
    UnknownMinerError,
    ValidationError,
)
from payouts.miner_registry import MinerRegistry
from payouts.owed_table import OwedTable
from payouts.settings import DistributionSettings, PoolSettings, Settings
from payouts.store import repositories as repo
from payouts.store.engine import make_engine
from payouts.store.ledger import (
    BlockRecord,
    DeferredLines,
    LedgerCredit,
    export_ledger,
    get_block_by_hash,
    ledger_balances,
    ledger_version,
    list_blocks,
    miner_balance,
    miner_balances,
    record_block_and_round,
)
from payouts.store.migrate import upgrade
from payouts.store.shares import persist_shares_with_ids
from payouts.tx.address import address_to_script
from payouts.tx.hashes import display_hex
from payouts.window_keeper import WindowKeeper

if TYPE_CHECKING:
    from payouts.published_view import PublishedWindow
    from payouts.settlement.modes import SettlementMode


class NotLeaderError(PayoutsError):
    """What only the leader of a cluster can answer was asked of a frontend."""

    code = "not-leader"


@dataclass(frozen=True, slots=True)
class RecordedBlock:
    """A block :meth:`PoolService.record_block` committed: its store row, the distribution it
    was found on, and how its revenue was settled (paid, kept, credited to the owed ledger).
    The composition root hands ``block`` and ``fitted`` to the settlement runner. A block
    reported again (``first`` False) is the first report's record, settled nothing new."""

    block: BlockRecord
    fitted: FittedDistribution
    settlement: BlockSettlement | None  # None when the block was already recorded
    first: bool = True  # False: an earlier report recorded it; ``block`` is that record


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    accepted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.accepted


log = logging.getLogger("payouts.service")

RECENT_DISTRIBUTIONS = 8  # published distributions kept in memory (a block names a recent one)
LEDGER_INLINE_MAX = 2_000  # a block's "dropped" credits beyond this go through the backlog


def _ledger_lines(settlement: BlockSettlement, ids: Mapping[str, int],
                  dropped_ids: Sequence[int] | None
                  ) -> tuple[list[LedgerCredit], DeferredLines | None]:
    """A block's ledger lines: written with the block, except a large set of "dropped"
    credits (every miner that had no room in the coinbase: up to the whole pool), which the
    block stores in the ledger backlog (payouts.store.ledger_backlog) and which are written
    out in small transactions afterwards, counted in every balance at once. ``ids``: the
    store's id of every account named (``dropped_ids``, when given, those of the fitted
    distribution's dropped rows, in order)."""
    raw = raw_field(settlement, "entries")
    if not isinstance(raw, SettlementEntries) or len(raw.dropped_accounts) <= LEDGER_INLINE_MAX:
        return [LedgerCredit(ids[e.account], e.amount, e.reason)
                for e in settlement.entries], None
    inline = [LedgerCredit(ids[e.account], e.amount, e.reason) for e in raw.explicit]
    if dropped_ids is None:
        deferred_ids = list(map(ids.__getitem__, raw.dropped_accounts))
    elif raw.dropped_rows is None:
        deferred_ids = list(dropped_ids)
    else:
        deferred_ids = list(map(dropped_ids.__getitem__, raw.dropped_rows))
    return inline, DeferredLines("dropped", deferred_ids, list(raw.dropped_amounts),
                                 known_miners=True)


class PoolService:
    """Store + accountant + distributions for one pool."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None,
                 migrate: bool = True, accounting: bool = True) -> None:
        self.settings = settings
        url = settings.effective_database_url
        if engine is None and url.startswith("sqlite:///"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine if engine is not None else make_engine(url)
        if migrate:
            upgrade(self.engine)
        # The window and its durable state (snapshot + replay on start: payouts.window_keeper).
        # A frontend of a cluster (``accounting=False``) holds none: it stores shares and
        # answers window reads from the view the leader publishes (:attr:`published`).
        self._window = WindowKeeper(settings, self.engine) if accounting else None
        self.published: PublishedWindow | None = None
        # Publishing takes the next distribution id; recording a block reads the balances it
        # settles against: each must not interleave with itself. Neither blocks share ingest.
        self._publish_lock = threading.Lock()
        self._block_lock = threading.Lock()
        self.miners = MinerRegistry(self.engine)
        # What every miner is owed, as of ledger_state.version _owed_version (reloaded when
        # the version moved: a reorg's reversal, another process; this service's own blocks
        # are applied in place).
        self._owed = OwedTable.of({})
        self._owed_version: int | None = None
        self._owed_lock = threading.Lock()
        self._fitted: dict[int, FittedDistribution] = {}
        self._fitted_lock = threading.Lock()
        self._settings_lock = threading.Lock()
        # account -> miner id, for batches naming miners by account: ids never change and
        # miners are never deleted, so a hit never goes stale.
        self._ids_by_account: dict[str, int] = {}

    @property
    def window(self) -> WindowKeeper:
        """The accounting window (the leader's alone: a frontend raises ``not-leader``)."""
        if self._window is None:
            raise NotLeaderError("this process is a frontend: the leader keeps the window")
        return self._window

    @property
    def accountant(self) -> Accountant:
        """The window's accountant (a reload replaces it: read it through here)."""
        return self.window.accountant

    # -- miners -------------------------------------------------------------------------------

    def register_miner(self, account: str, payout_script: bytes,
                       musig_pubkey: bytes | None = None) -> repo.MinerRecord:
        return repo.register_miner(self.engine, account, payout_script, musig_pubkey)

    def miner_id(self, account: str) -> int:
        ids = repo.miner_ids(self.engine, [account])
        if account not in ids:
            raise UnknownMinerError(f"no miner account {account!r}")
        return ids[account]

    def find_miner(self, account: str) -> repo.MinerRecord | None:
        return repo.get_miner_by_account(self.engine, account)

    def miner(self, account: str) -> repo.MinerRecord:
        """The registered miner ``account`` (``unknown-miner`` otherwise)."""
        return views.miner(self, account)

    def balance(self, account: str) -> tuple[bytes, int]:
        """(payout script, owed sats) of ``account`` in one indexed query (the API's hot read)."""
        found = miner_balance(self.engine, account)
        if found is None:
            raise UnknownMinerError(f"no miner account {account!r}")
        return found[1], found[2]

    def balances_of(self, accounts: list[str]) -> dict[str, tuple[bytes, int]]:
        """:meth:`balance` of several accounts in one query; unknown accounts are absent."""
        return {a: (f[1], f[2]) for a, f in miner_balances(self.engine, accounts).items()}

    # -- shares -------------------------------------------------------------------------------

    def ingest(self, batch: ShareBatch) -> IngestResult:
        """Persist (durable before returning) and account a batch; duplicates are skipped.
        A frontend only persists: the leader's share follower accounts it (payouts.leader)."""
        if self._window is None:
            return IngestResult(len(batch), len(persist_shares_with_ids(self.engine, batch)[0]))
        return IngestResult(len(batch), self.window.ingest(batch))

    def ingest_accounts(self, shares: AccountShareBatch) -> IngestResult:
        """:meth:`ingest` a batch that names miners by account (``POST /v1/shares``), checked
        whole by :mod:`payouts.accounting.validate` first: column lengths, keys, duplicates and
        accounts here, the rest in the store. A row that breaks a rule names its row and key."""
        check_keys(shares.key, shares.columns())
        ids = self._account_ids(shares.account)
        batch = ShareBatch(
            key=shares.key, miner_id=resolve_accounts(shares.key, shares.account, ids),
            worker=shares.worker, difficulty=int64_column("difficulty", shares.difficulty),
            job_id=shares.job_id, revenue=int64_column("revenue", shares.revenue),
            time_ms=int64_column("time_ms", shares.time_ms),
        )
        return self.ingest(batch)

    def _account_ids(self, accounts: Iterable[str]) -> Mapping[str, int]:
        missing = set(accounts).difference(self._ids_by_account)
        if missing:
            self._ids_by_account.update(repo.miner_ids(self.engine, missing))
        return self._ids_by_account

    # -- distributions ------------------------------------------------------------------------

    def pool_script(self) -> bytes:
        pool = self.settings.pool
        if pool.payout_script:
            return bytes.fromhex(pool.payout_script)
        if pool.payout_address:
            return address_to_script(pool.payout_address, self.settings.network)
        raise ConfigError("set [pool] payout_address or payout_script to publish distributions")

    def balances(self) -> dict[int, int]:
        """``{miner_id: owed}`` for every miner the ledger ever credited."""
        return self._balances_at()[0].as_dict()

    def _balances_at(self) -> tuple[OwedTable, int]:
        """The balances and the ledger version they are at: one small query when nothing
        changed since the last read."""
        with self._owed_lock:
            v = ledger_version(self.engine)
            if v != self._owed_version:
                self._owed, self._owed_version = OwedTable.of(ledger_balances(self.engine)), v
            return self._owed, v

    def _owed_moved(self, before: int | None, lines: list[LedgerCredit],
                    deferred: DeferredLines | None) -> None:
        """This service's block moved the ledger by ``lines`` (+ ``deferred``): apply them in
        place when nothing else moved it since ``before``, else reload at the next read."""
        with self._owed_lock:
            if before is None or self._owed_version != before:
                self._owed_version = None
                return
            if ledger_version(self.engine) != before + 1:
                self._owed_version = None
                return
            ids = [c.miner_id for c in lines]
            amounts = [c.amount for c in lines]
            if deferred is not None:
                ids += deferred.miner_ids
                amounts += deferred.amounts
            self._owed, self._owed_version = self._owed.plus(ids, amounts), before + 1

    def candidates(self) -> CandidateColumns:
        """The window's miners (id order), then the miners owed a balance with no weight in
        the window: as columns, no object per miner (issue #2)."""
        with self.window.lock:
            weights = self.accountant.weights()
        table = self._balances_at()[0]
        owed = table.get(weights.miner_ids)
        # Miners with an owed balance but no weight in this window are still candidates.
        pos_ids, pos_owed = table.positive()
        outside = ~np.isin(pos_ids, weights.miner_ids)
        extra, extra_owed = pos_ids[outside], pos_owed[outside]
        all_ids = np.concatenate([weights.miner_ids, extra]).tolist()
        accounts, scripts = self.miners.accounts_and_scripts(all_ids)
        return CandidateColumns(
            accounts,
            scripts,
            [*weights.weights, *repeat(0, len(extra))],
            np.concatenate([owed, extra_owed]).tolist(),
            miner_ids=all_ids,
        )

    def publish_distribution(self, estimated_revenue: int) -> FittedDistribution:
        """Fit the current window into a new distribution (strictly increasing id) and store it.
        A window with no earned weight (empty, or a PROP round that just closed) gives a
        pool-only distribution: the pool payout takes T (owed balances wait for earned weight,
        which funds their repayment). Pushing it to JD clients is the caller's (the composition
        root's :meth:`payouts.served.ServedPool.publish_distribution`)."""
        ds = self.settings.distribution
        with self._publish_lock:
            next_id = (repo.last_distribution_id(self.engine) or 0) + 1
            candidates = self.candidates()
            # Repayments of owed balances are funded by earned weight (the pool fee and the
            # payees that did not fit): with nothing earned yet (a PROP round that just
            # closed) there is nothing to fit, and the pool payout takes T until shares come.
            if any(candidates.weights):
                fitted = fit_distribution(
                    next_id,
                    self.pool_script(),
                    candidates,
                    fee_bps=self.settings.pool.fee_bps,
                    budget=Budget(ds.max_outputs_bytes, ds.max_sigops),
                    estimated_revenue=estimated_revenue,
                )
            else:
                pool_only = Distribution(next_id, PoolPayout(self.pool_script(), 1))
                fitted = FittedDistribution(pool_only, (), (), (), 0)
            repo.save_distribution(self.engine, next_id, fitted_to_json(fitted), trusted=True)
            self._remember(fitted)
        return fitted

    def latest_distribution(self) -> FittedDistribution | None:
        last = repo.last_distribution_id(self.engine)
        return None if last is None else self.distribution(last)

    def recent_distributions(self, n: int = RECENT_DISTRIBUTIONS) -> list[FittedDistribution]:
        """The ``n`` newest stored distributions, newest first."""
        last = repo.last_distribution_id(self.engine) or 0
        out = []
        for distribution_id in range(last, max(last - n, 0), -1):
            try:
                out.append(self.distribution(distribution_id))
            except ValidationError:  # ids are not reused; a gap is no distribution
                continue
        return out

    def _remember(self, fitted: FittedDistribution) -> None:
        with self._fitted_lock:
            self._fitted[fitted.distribution.distribution_id] = fitted
            while len(self._fitted) > RECENT_DISTRIBUTIONS:
                self._fitted.pop(min(self._fitted))

    def distribution(self, distribution_id: int) -> FittedDistribution:
        """A stored distribution (the recently published ones from memory: a block found on
        one does not re-read and re-parse a 100k-payee document)."""
        with self._fitted_lock:
            hit = self._fitted.get(distribution_id)
        if hit is not None:
            return hit
        record = repo.load_distribution(self.engine, distribution_id)
        if record is None:
            raise ValidationError(f"distribution {distribution_id} does not exist",
                                  code="unknown-distribution")
        return fitted_from_json(record.body)

    # -- blocks -------------------------------------------------------------------------------

    def record_block(self, *, distribution_id: int, revenue: int, block_hash: bytes,
                     height: int) -> RecordedBlock:
        """A block was found on ``distribution_id``: settle it and write the ledger lines in the
        same transaction as the block. Tracking its settlement is the caller's (the composition
        root hands the result to the settlement runner).

        The one entry point for a found block, whichever path reports it (PushSolution, a
        Mining Protocol share, the node already having it; ARCHITECTURE.md invariant 8): keyed
        by ``block_hash`` (unique in the store), idempotent. A block already recorded is not
        settled again: the first record comes back with ``first=False``, also when another
        process recorded it between our check and our write."""
        fitted = self.distribution(distribution_id)
        with self._block_lock:
            known = self._known_block(block_hash, distribution_id, revenue)
            if known is not None:
                # Answered before the round closes in memory (a refused write would cost a
                # rebuild of the window from the store).
                return known
            # The dropped candidates' ids ride with a distribution published here (their
            # 100k-account lookup was the slowest part of a block); one loaded from the store
            # looks them up.
            dropped = raw_field(fitted, "dropped")
            dropped_ids = dropped.miner_ids() if isinstance(dropped, DroppedColumns) else None
            if dropped_ids is None:
                ids = self.miners.ids([*fitted.accounts, *dropped_columns(fitted)[0]])
            else:
                ids = self.miners.ids(fitted.accounts)
                if len(dropped_ids) <= LEDGER_INLINE_MAX:  # named in the inline lines
                    ids.update(zip(dropped_columns(fitted)[0], dropped_ids, strict=True))
            table, before = self._balances_at()
            # Only the payees' balances matter: only a payee can be repaid (settle_block).
            payees = [a for a in fitted.accounts if a in ids]
            by_account = dict(zip(payees, table.get([ids[a] for a in payees]).tolist(),
                                  strict=True))
            settlement = settle_block(fitted, revenue, ref=display_hex(block_hash),
                                      balances=by_account)
            credits, deferred = _ledger_lines(settlement, ids, dropped_ids)

            def write(after_share_id: int) -> tuple[BlockRecord, int]:
                block, event_id = record_block_and_round(
                    self.engine, height=height, block_hash=block_hash, revenue=revenue,
                    distribution_id=distribution_id, credits=credits,
                    round_after_share_id=after_share_id, deferred=deferred)
                assert event_id is not None
                return block, event_id

            # The round closes in memory at the newest share, then the block, its ledger
            # lines and the round event commit together; ingest goes on meanwhile.
            try:
                block = self.window.close_round(write)
            except DuplicateKeyError:
                # Another process recorded it in between (the unique hash refused ours; the
                # window was rebuilt from the store, which holds that process's round).
                known = self._known_block(block_hash, distribution_id, revenue)
                if known is None:
                    raise
                return known
            self._owed_moved(before, credits, deferred)
        return RecordedBlock(block, fitted, settlement)

    def _known_block(self, block_hash: bytes, distribution_id: int,
                     revenue: int) -> RecordedBlock | None:
        """The block's first record, when it has one (a second report of the same block)."""
        block = get_block_by_hash(self.engine, block_hash)
        if block is None:
            return None
        if (block.distribution_id, block.revenue) != (distribution_id, revenue):
            log.warning("block %s reported again with distribution %s and revenue %d; it was "
                        "recorded with distribution %s and revenue %d: the first record stands",
                        display_hex(block_hash), distribution_id, revenue,
                        block.distribution_id, block.revenue)
        first = (self.distribution(block.distribution_id)
                 if block.distribution_id is not None else self.distribution(distribution_id))
        return RecordedBlock(block, first, None, first=False)

    def block_by_hash(self, block_hash: bytes) -> BlockRecord | None:
        """The recorded block of that hash (internal byte order), if any."""
        return get_block_by_hash(self.engine, block_hash)

    def owed(self) -> dict[str, int]:
        balances = self.balances()
        miners = repo.get_miners(self.engine, balances)
        return {miners[i].account: b for i, b in balances.items() if b}

    # -- runtime settings ---------------------------------------------------------------------

    def update_settings(self, patch: Mapping[str, Any], *,
                        fixed_mode: SettlementMode | None = None) -> Settings:
        """Change pool fee, settlement mode and budgets in memory (``fee_bps`` of ``[pool]``,
        the rest of ``[distribution]``), validated like the settings file; both tables are
        replaced only once both are valid. Not persisted: the file is the source of truth at
        start.

        ``fixed_mode``: the mode a running settlement runner settles every block with (the JD
        server announced it to its clients, 0x4003, and checks every coinbase against it).
        Changing the mode, or the fan-out parameters in ctv mode, is then refused with
        ``mode-change-needs-restart`` and nothing changes."""
        with self._settings_lock:
            s = self.settings
            pool = PoolSettings.model_validate(
                {**s.pool.model_dump(), **{k: v for k, v in patch.items() if k == "fee_bps"}}
            )
            dist = DistributionSettings.model_validate(
                {**s.distribution.model_dump(),
                 **{k: v for k, v in patch.items() if k != "fee_bps"}}
            )
            if fixed_mode is not None and (dist.mode != fixed_mode.name or (
                    dist.mode == "ctv" and dist.ctv_params() != fixed_mode.ctv)):
                raise PayoutsError(
                    f"this server settles in {fixed_mode.name} mode (announced to JD clients "
                    "and used for every recorded block); change [distribution] in the "
                    "settings file and restart", code="mode-change-needs-restart",
                    mode=fixed_mode.name)
            if dist.mode == "musig2" and s.settlement.musig2 is None:
                raise ConfigError("distribution.mode = musig2 needs a [settlement.musig2] table "
                                  "(committee, fallback_key, ...) in the settings file")
            s.pool, s.distribution = pool, dist
        return s

    # -- read models (payouts.views) ----------------------------------------------------------

    def check_store(self) -> None:
        """Raise if the store does not answer (liveness)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def window_view(self) -> views.WindowView:
        if self._window is None and self.published is not None:
            return self.published.window()
        return views.window(self)

    def miner_shares(self, account: str) -> views.MinerShares:
        if self._window is None and self.published is not None:
            m = views.miner(self, account)
            return views.MinerShares(m, self.settings.accounting.scheme,
                                     self.published.miner_stats(m.id))
        return views.miner_shares(self, account)

    def miner_ledger(self, account: str) -> views.MinerLedger:
        return views.miner_ledger(self, account)

    def payout_history(self, account: str) -> views.PayoutHistory:
        return views.payout_history(self, account)

    def exit_path(self, account: str, block_id: int) -> views.MinerExitPath:
        return views.miner_exit_path(self, account, block_id)

    def block(self, block_id: int) -> BlockRecord:
        return views.block(self, block_id)

    def blocks(self, status: str | None = None) -> list[BlockRecord]:
        """Recorded blocks in id order, only those with ``status`` when given."""
        return list_blocks(self.engine, status)

    def ledger(self) -> list[dict[str, Any]]:
        """The whole owed-balance ledger in id order (audit export)."""
        return export_ledger(self.engine)

    def settlements(self) -> list[views.SettlementView]:
        return views.settlements(self)

    def settlement(self, block_id: int) -> views.SettlementView:
        return views.settlement(self, block_id)

    # -- dashboards (payouts.dashboards) -------------------------------------------------------

    # A member of a cluster has no window: the pages take the window's figures from the view
    # the leader published, the rest from the database (docs/deployment.md, "Pages").

    def miner_dashboard(self, account: str, *, now_ms: int,
                        span_ms: int = dashboards.CHART_SPAN_MS) -> dashboards.MinerDashboard:
        published = self.published if self._window is None else None
        return dashboards.miner_dashboard(
            self, account, now_ms=now_ms, span_ms=span_ms,
            window_stats=None if published is None else published.dashboard_stats)

    def leader_node(self) -> tuple[Any, int | None]:
        """On a cluster member: the leader's node status and template revenue as published
        with the view (:meth:`payouts.published_view.PublishedWindow.leader_node`); else, or
        before any view, (None, None)."""
        if self._window is None and self.published is not None:
            try:
                return self.published.leader_node()
            except PayoutsError:
                return None, None
        return None, None

    def window_summary(self) -> dashboards.WindowSummary:
        if self._window is None and self.published is not None:
            return dashboards.published_window_summary(self.published.window())
        return dashboards.window_summary(self)

    def distribution_summary(self, revenue: int | None) -> dashboards.DistributionSummary | None:
        """The newest distribution at ``revenue`` (None before any was published)."""
        latest = self.latest_distribution()
        return None if latest is None else dashboards.distribution_summary(self, latest, revenue)

    def pool_hashrate(self, since_ms: int, until_ms: int) -> list[tuple[int, int]]:
        return dashboards.pool_hashrate(self, since_ms, until_ms)
