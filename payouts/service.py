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

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine

from payouts import views
from payouts.accounting.accountant import Accountant
from payouts.accounting.shares import AccountShareBatch, ShareBatch
from payouts.accounting.validate import check_keys, int64_column, resolve_accounts
from payouts.distribution.columns import store_field
from payouts.distribution.fitting import (
    Budget,
    Candidate,
    CandidateColumns,
    DroppedColumns,
    FittedDistribution,
    IntColumn,
    fit_distribution,
)
from payouts.distribution.jsonio import distribution_from_json
from payouts.distribution.model import Distribution, Payee, PayeeColumns, PoolPayout
from payouts.distribution.settle import (
    BlockSettlement,
    dropped_columns,
    fitted_column,
    int_column,
    settle_block,
)
from payouts.errors import ConfigError, PayoutsError, UnknownMinerError, ValidationError
from payouts.settings import DistributionSettings, PoolSettings, Settings
from payouts.store import repositories as repo
from payouts.store.engine import make_engine
from payouts.store.ledger import (
    BlockRecord,
    LedgerCredit,
    export_ledger,
    ledger_balances,
    list_blocks,
    miner_balance,
    record_block_and_round,
)
from payouts.store.migrate import upgrade
from payouts.tx.address import address_to_script
from payouts.tx.hashes import display_hex
from payouts.window_keeper import WindowKeeper

if TYPE_CHECKING:
    from payouts.settlement.modes import SettlementMode


@dataclass(frozen=True, slots=True)
class RecordedBlock:
    """A block :meth:`PoolService.record_block` committed: its store row, the distribution it
    was found on, and how its revenue was settled (paid, kept, credited to the owed ledger).
    The composition root hands ``block`` and ``fitted`` to the settlement runner."""

    block: BlockRecord
    fitted: FittedDistribution
    settlement: BlockSettlement


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    accepted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.accepted


def fitted_to_json(f: FittedDistribution) -> dict[str, Any]:
    """Everything needed to settle a block found on this distribution, even after a restart.

    Read from the columns (issue #2): the same document as building it payee by payee
    (``distribution_to_json`` plus the ledger fields), big ints as strings since JSON readers
    lose them."""
    dist = f.distribution
    cols = dist.columns()
    pool = dist.pool_payout
    d_accounts, d_scripts, d_weights, d_owed = dropped_columns(f)
    return {
        "distribution_id": dist.distribution_id,
        "pool_payout": {"script": pool.script.hex(), "weight": str(pool.weight)},
        "payouts": [
            {"script": s, "weight": w, "dust_limit": d}
            for s, w, d in zip(map(bytes.hex, cols.scripts), map(str, cols.weights.tolist()),
                               cols.dust_limits.tolist(), strict=True)
        ],
        "additional_outputs": [
            {"script": a.script.hex(), "amount": a.amount} for a in dist.additional_outputs
        ],
        "accounts": list(f.accounts),
        "earned": list(map(str, fitted_column(f, "earned").tolist())),
        "owed": fitted_column(f, "owed").tolist(),
        "fee_weight": str(f.fee_weight),
        "dropped": [
            {"account": a, "script": s, "weight": w, "owed": o}
            for a, s, w, o in zip(d_accounts, map(bytes.hex, d_scripts),
                                  map(str, d_weights.tolist()), d_owed.tolist(), strict=True)
        ],
    }


def _fitted_from_objects(body: dict[str, Any]) -> FittedDistribution:
    """:func:`fitted_from_json` payee by payee: the reference, and the path for documents the
    column reader does not take (it then raises the error this one gives, or agrees)."""
    doc = dict(body)
    doc["pool_payout"] = dict(body["pool_payout"], weight=int(body["pool_payout"]["weight"]))
    doc["payouts"] = [dict(p, weight=int(p["weight"])) for p in body["payouts"]]
    dist = distribution_from_json(doc)
    payees = tuple(
        Payee(p.script, p.weight, p.dust_limit, account)
        for p, account in zip(dist.payouts, body["accounts"], strict=True)
    )
    dist = Distribution(dist.distribution_id, dist.pool_payout, payees, dist.additional_outputs)
    return FittedDistribution(
        distribution=dist,
        earned=tuple(int(e) for e in body["earned"]),
        owed=tuple(int(o) for o in body["owed"]),
        dropped=tuple(
            Candidate(d["account"], bytes.fromhex(d["script"]), int(d["weight"]), int(d["owed"]))
            for d in body["dropped"]
        ),
        fee_weight=int(body["fee_weight"]),
    )


def _fitted_from_columns(body: dict[str, Any]) -> FittedDistribution:
    """:func:`fitted_from_json` into columns: no Payee or Candidate object per row. Raises
    (anything) on a document it does not take exactly as the per-object reader would."""
    payouts = body["payouts"]
    accounts = body["accounts"]
    if (type(payouts) is not list or type(accounts) is not list
            or len(accounts) != len(payouts)
            or any(type(p) is not dict or type(p.get("dust_limit")) is not int for p in payouts)):
        raise ValueError("not a plain stored document")
    scripts = [bytes.fromhex(p["script"]) for p in payouts]
    weights = np.array([int(p["weight"]) for p in payouts], dtype=np.uint64)
    dusts = np.array([p["dust_limit"] for p in payouts], dtype=np.int64)
    # the pool payout, id and additional outputs, checked by the per-object reader
    head = dict(body, payouts=[])
    head["pool_payout"] = dict(body["pool_payout"], weight=int(body["pool_payout"]["weight"]))
    shell = distribution_from_json(head)
    dist = Distribution.from_columns(
        shell.distribution_id, shell.pool_payout,
        PayeeColumns(scripts, weights, dusts, accounts), shell.additional_outputs)
    raw_dropped = body["dropped"]
    d_accounts = [d["account"] for d in raw_dropped]
    d_scripts = [bytes.fromhex(d["script"]) for d in raw_dropped]
    d_weights = np.array([int(d["weight"]) for d in raw_dropped], dtype=np.int64)
    d_owed = np.array([int(d["owed"]) for d in raw_dropped], dtype=np.int64)
    fitted = FittedDistribution(dist, (), (), (), int(body["fee_weight"]))
    store_field(fitted, "earned", IntColumn(int_column([int(e) for e in body["earned"]])))
    store_field(fitted, "owed", IntColumn(int_column([int(o) for o in body["owed"]])))
    store_field(fitted, "dropped", DroppedColumns(
        CandidateColumns(d_accounts, d_scripts, d_weights.tolist(), d_owed.tolist()),
        d_weights, d_owed, np.arange(len(raw_dropped), dtype=np.intp)))
    return fitted


def fitted_from_json(body: dict[str, Any]) -> FittedDistribution:
    """The distribution :func:`fitted_to_json` stored, equal to reading it payee by payee."""
    try:
        return _fitted_from_columns(body)
    except Exception:  # whatever the column reader refused, the per-object one explains
        return _fitted_from_objects(body)


class PoolService:
    """Store + accountant + distributions for one pool."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None,
                 migrate: bool = True) -> None:
        self.settings = settings
        url = settings.effective_database_url
        if engine is None and url.startswith("sqlite:///"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine if engine is not None else make_engine(url)
        if migrate:
            upgrade(self.engine)
        # The window and its durable state (snapshot + replay on start: payouts.window_keeper).
        self.window = WindowKeeper(settings, self.engine)
        # Publishing takes the next distribution id; recording a block reads the balances it
        # settles against: each must not interleave with itself. Neither blocks share ingest.
        self._publish_lock = threading.Lock()
        self._block_lock = threading.Lock()
        self._settings_lock = threading.Lock()
        # account -> miner id, for batches naming miners by account: ids never change and
        # miners are never deleted, so a hit never goes stale.
        self._ids_by_account: dict[str, int] = {}

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

    # -- shares -------------------------------------------------------------------------------

    def ingest(self, batch: ShareBatch) -> IngestResult:
        """Persist (durable before returning) and account a batch; duplicates are skipped."""
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

    def candidates(self) -> CandidateColumns:
        """The window's miners (id order), then the miners owed a balance with no weight in
        the window: as columns, no object per miner (issue #2)."""
        with self.window.lock:
            weights = self.accountant.weights()
        ids = weights.miner_ids.tolist()
        miners = repo.get_miners(self.engine, ids)
        balances = ledger_balances(self.engine)
        records = list(map(miners.__getitem__, ids))
        owed = list(map(balances.get, ids, repeat(0)))
        # Miners with an owed balance but no weight in this window are still candidates.
        in_window = set(ids)
        owed_only = [i for i, b in balances.items() if b > 0 and i not in in_window]
        extra = list(repo.get_miners(self.engine, owed_only).values())
        records += extra
        owed += [balances[m.id] for m in extra]
        return CandidateColumns(
            [m.account for m in records],
            [m.payout_script for m in records],
            [*weights.weights, *repeat(0, len(extra))],
            owed,
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
            repo.save_distribution(self.engine, next_id, fitted_to_json(fitted))
        return fitted

    def latest_distribution(self) -> FittedDistribution | None:
        last = repo.last_distribution_id(self.engine)
        return None if last is None else self.distribution(last)

    def distribution(self, distribution_id: int) -> FittedDistribution:
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
        root hands the result to the settlement runner)."""
        fitted = self.distribution(distribution_id)
        with self._block_lock:
            accounts = [*fitted.accounts, *(c.account for c in fitted.dropped)]
            ids = repo.miner_ids(self.engine, accounts)
            balances = ledger_balances(self.engine, list(ids.values()))
            by_account = {a: balances.get(i, 0) for a, i in ids.items()}
            settlement = settle_block(fitted, revenue, ref=display_hex(block_hash),
                                      balances=by_account)
            credits = [LedgerCredit(ids[e.account], e.amount, e.reason) for e in settlement.entries]

            def write(after_share_id: int) -> tuple[BlockRecord, int]:
                block, event_id = record_block_and_round(
                    self.engine, height=height, block_hash=block_hash, revenue=revenue,
                    distribution_id=distribution_id, credits=credits,
                    round_after_share_id=after_share_id)
                assert event_id is not None
                return block, event_id

            # The round closes in memory at the newest share, then the block, its ledger
            # lines and the round event commit together; ingest goes on meanwhile.
            block = self.window.close_round(write)
        return RecordedBlock(block, fitted, settlement)

    def owed(self) -> dict[str, int]:
        balances = ledger_balances(self.engine)
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
        return views.window(self)

    def miner_shares(self, account: str) -> views.MinerShares:
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
