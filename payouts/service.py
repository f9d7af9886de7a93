"""The pool service: the store, the accountant and the distribution wired together.

This is the one place where durable state (SQLAlchemy store) and in-memory state (the share log
and its windows) meet. Invariant 6 of ARCHITECTURE.md: a share batch is acknowledged only after
it is committed; re-sending it changes nothing. On start the in-memory log is rebuilt from the
stored shares in id order, so the windows after a restart equal the windows before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from payouts.accounting.accountant import Accountant
from payouts.accounting.shares import ShareBatch
from payouts.distribution.fitting import Budget, Candidate, FittedDistribution, fit_distribution
from payouts.distribution.jsonio import distribution_from_json, distribution_to_json
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.distribution.settle import BlockSettlement, settle_block
from payouts.errors import ConfigError, UnknownMinerError, ValidationError
from payouts.settings import Settings
from payouts.store import repositories as repo
from payouts.store.engine import make_engine
from payouts.store.ledger import BlockRecord, LedgerCredit, ledger_balances, record_block
from payouts.store.migrate import upgrade
from payouts.store.shares import iter_shares, persist_shares
from payouts.tx.address import address_to_script
from payouts.tx.transaction import Tx

if TYPE_CHECKING:
    from payouts.settlement.runner import SettlementRunner

# (block, its distribution, the coinbase when known): who settles a recorded block.
BlockListener = Callable[[BlockRecord, FittedDistribution, Tx | None], object]


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    accepted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.accepted


def fitted_to_json(f: FittedDistribution) -> dict[str, Any]:
    """Everything needed to settle a block found on this distribution, even after a restart."""
    body = distribution_to_json(f.distribution)
    body["accounts"] = list(f.accounts)
    body["earned"] = [str(e) for e in f.earned]  # big ints as strings: JSON readers lose them
    body["owed"] = list(f.owed)
    body["fee_weight"] = str(f.fee_weight)
    body["dropped"] = [
        {"account": c.account, "script": c.script.hex(), "weight": str(c.weight), "owed": c.owed}
        for c in f.dropped
    ]
    for p in body["payouts"]:
        p["weight"] = str(p["weight"])
    body["pool_payout"]["weight"] = str(body["pool_payout"]["weight"])
    return body


def fitted_from_json(body: dict[str, Any]) -> FittedDistribution:
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
        self.accountant = Accountant(settings.accounting)
        # Called with every newly published distribution (the JD server pushes it to clients).
        self.on_publish: list[Callable[[FittedDistribution], None]] = []
        # Called with every recorded block, after its transaction committed (the settlement
        # runner tracks it); ``settlement`` is that runner when one is attached.
        self.on_block_recorded: list[BlockListener] = []
        self.settlement: SettlementRunner | None = None
        # One writer at a time keeps the in-memory log in the same order as the stored ids.
        self._lock = threading.Lock()
        for batch in iter_shares(self.engine):
            self.accountant.ingest(batch)

    # -- miners -------------------------------------------------------------------------------

    def register_miner(self, account: str, payout_script: bytes,
                       musig_pubkey: bytes | None = None) -> repo.MinerRecord:
        return repo.register_miner(self.engine, account, payout_script, musig_pubkey)

    def miner_id(self, account: str) -> int:
        ids = repo.miner_ids(self.engine, [account])
        if account not in ids:
            raise UnknownMinerError(f"no miner account {account!r}")
        return ids[account]

    # -- shares -------------------------------------------------------------------------------

    def ingest(self, batch: ShareBatch) -> IngestResult:
        """Persist (durable before returning) and account a batch; duplicates are skipped."""
        with self._lock:
            new = persist_shares(self.engine, batch)
            if len(new):
                self.accountant.ingest(batch if len(new) == len(batch) else batch.take(new))
        return IngestResult(len(batch), len(new))

    # -- distributions ------------------------------------------------------------------------

    def pool_script(self) -> bytes:
        pool = self.settings.pool
        if pool.payout_script:
            return bytes.fromhex(pool.payout_script)
        if pool.payout_address:
            return address_to_script(pool.payout_address, self.settings.network)
        raise ConfigError("set [pool] payout_address or payout_script to publish distributions")

    def candidates(self) -> list[Candidate]:
        weights = self.accountant.weights()
        ids = weights.miner_ids.tolist()
        miners = repo.get_miners(self.engine, ids)
        balances = ledger_balances(self.engine)
        by_id = {m.id: m for m in miners.values()}
        out = [
            Candidate(by_id[i].account, by_id[i].payout_script, w, balances.get(i, 0))
            for i, w in zip(ids, weights.weights, strict=True)
        ]
        # Miners with an owed balance but no weight in this window are still candidates.
        in_window = set(ids)
        owed_only = [i for i, b in balances.items() if b > 0 and i not in in_window]
        for m in repo.get_miners(self.engine, owed_only).values():
            out.append(Candidate(m.account, m.payout_script, 0, balances[m.id]))
        return out

    def publish_distribution(self, estimated_revenue: int) -> FittedDistribution:
        """Fit the current window into a new distribution (strictly increasing id), store it
        and hand it to the ``on_publish`` listeners. An empty window (nobody has weight and
        nobody is owed) gives a pool-only distribution: the pool payout takes T."""
        ds = self.settings.distribution
        with self._lock:
            next_id = (repo.last_distribution_id(self.engine) or 0) + 1
            candidates = self.candidates()
            if any(c.weight or c.owed for c in candidates):
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
        for listener in self.on_publish:
            listener(fitted)
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
                     height: int, coinbase: Tx | None = None) -> BlockSettlement:
        """A block was found on ``distribution_id``: settle it and write the ledger lines in the
        same transaction as the block, then hand it to the ``on_block_recorded`` listeners
        (``coinbase``, when given, lets them check and locate the payout outputs at once)."""
        fitted = self.distribution(distribution_id)
        with self._lock:
            accounts = [*fitted.accounts, *(c.account for c in fitted.dropped)]
            ids = repo.miner_ids(self.engine, accounts)
            balances = ledger_balances(self.engine, list(ids.values()))
            by_account = {a: balances.get(i, 0) for a, i in ids.items()}
            settlement = settle_block(fitted, revenue, ref=block_hash[::-1].hex(),
                                      balances=by_account)
            credits = [LedgerCredit(ids[e.account], e.amount, e.reason) for e in settlement.entries]
            block = record_block(self.engine, height=height, block_hash=block_hash,
                                 revenue=revenue, distribution_id=distribution_id,
                                 credits=credits)
            self.accountant.on_block_found()
        for listener in self.on_block_recorded:
            listener(block, fitted, coinbase)
        return settlement

    def owed(self) -> dict[str, int]:
        balances = ledger_balances(self.engine)
        miners = repo.get_miners(self.engine, balances)
        return {miners[i].account: b for i, b in balances.items() if b}
