"""Retention: detail older than the window's reach and ``[retention] keep_days`` leaves the
store for an archive an auditor can read (docs/retention.md, issue #11).

What goes, and what stays:

- **shares** with an id below the oldest share the window can still reach (the oldest row the
  accountant holds in memory: everything a snapshot, a restart or a TIDES reload may read) *and*
  a time older than ``keep_days``: archived, then deleted;
- **ledger lines** older than ``keep_days`` whose block is settled for good (``paid`` or
  ``orphaned``) or that belong to no block: archived, then deleted. ``miner_balances`` holds
  their sums, so no balance changes;
- **distributions** older than ``keep_days`` that no block was found on and that are not the
  newest: archived, then deleted;
- **accounting events** placed before the oldest share left, except the newest difficulty
  event (the window's D): deleted (they only ever placed rows that are gone).

Blocks, settlements, their transactions, miners and balances are never pruned.

The archive is gzip-compressed CSV (distributions: JSON lines), one file per UTC day and per
run, named by the id range it holds (``shares/2026-12-07/ids-1-50000.csv.gz``): written and
fsynced before the rows are deleted, so a crash in between only means the next run writes the
same file again (same name, same rows), never a gap.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select

from payouts.service import PoolService
from payouts.states import BlockStatus
from payouts.store.accounting_models import AccountingEvent
from payouts.store.models import Block, Distribution, LedgerEntry, Miner, Share
from payouts.tx.hashes import display_hex

log = logging.getLogger("payouts.retention")

CHUNK = 20_000  # rows per archive read and delete (below both databases' parameter limits)


@dataclass
class PruneReport:
    """What one run archived and deleted (``dry_run``: what it would)."""

    cutoff: datetime
    reach_share_id: int
    shares: int = 0
    ledger_lines: int = 0
    distributions: int = 0
    events: int = 0
    files: list[Path] = field(default_factory=list)
    dry_run: bool = False


def archive_dir(service: PoolService) -> Path:
    r = service.settings.retention
    return r.archive_dir if r.archive_dir is not None else service.settings.data_dir / "archive"


def reach_share_id(service: PoolService) -> int:
    """The oldest share id the window can still read: the oldest row its accountant holds (a
    snapshot's rows, a restart's replay and a TIDES reload all start at or after it)."""
    keeper = service.window
    with keeper.lock:
        log_ = keeper.accountant.log
        if log_.first_row < len(log_):
            return int(log_.rows(log_.first_row, log_.first_row + 1)[4][0])
        return keeper.last_share_id + 1


def prune(service: PoolService, *, now: float | None = None,
          dry_run: bool = False) -> PruneReport:
    """One retention run (module docstring)."""
    now = time.time() if now is None else now
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=service.settings.retention.keep_days)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    report = PruneReport(cutoff, reach_share_id(service), dry_run=dry_run)
    root = archive_dir(service)
    engine = service.engine
    _prune_shares(engine, root, report, cutoff_ms)
    _prune_ledger(engine, root, report, cutoff)
    _prune_distributions(engine, root, report, cutoff)
    _prune_events(engine, report)
    if report.shares or report.ledger_lines or report.distributions or report.events:
        log.info("retention: %s %d shares, %d ledger lines, %d distributions, %d events older "
                 "than %s (archive: %s)", "would remove" if dry_run else "archived and removed",
                 report.shares, report.ledger_lines, report.distributions, report.events,
                 cutoff.isoformat(timespec="seconds"), root)
    return report


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def _write(path: Path, header: Sequence[str] | None, rows: Iterable[Sequence[Any]],
           jsonl: bool = False) -> None:
    """Write a gzip file atomically (tmp + fsync + rename): a crash leaves the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, io.TextIOWrapper(
                gz, encoding="utf-8", newline="") as text:
            if jsonl:
                for r in rows:
                    text.write(str(r[0]) + "\n")
            else:
                w = csv.writer(text)
                if header is not None:
                    w.writerow(header)
                w.writerows(rows)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)


def _by_day(rows: Sequence[Any], day_of: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        out[day_of(r)].append(r)
    return out


def _archive_rows(engine: Engine, root: Path, report: PruneReport, *, kind: str,
                  query: Callable[[int], Any], id_column: Any, day_of: Callable[[Any], str],
                  header: Sequence[str], row: Callable[[Any], Sequence[Any]]) -> int:
    """Page through ``query(last_id)`` (ordered by id, at most :data:`CHUNK` rows), write each
    page to ``root/kind/<day>/ids-<first>-<last>.csv.gz`` per day, then delete it; the rows
    seen (in a dry run: counted only)."""
    last = seen = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(query(last)).all()
        if not rows:
            return seen
        last = int(rows[-1].id)
        seen += len(rows)
        if report.dry_run:
            continue
        for day, group in _by_day(rows, day_of).items():
            path = root / kind / day / f"ids-{group[0].id}-{group[-1].id}.csv.gz"
            _write(path, header, [row(r) for r in group])
            report.files.append(path)
        with engine.begin() as conn:
            conn.execute(delete(id_column.table).where(id_column.in_([int(r.id) for r in rows])))


def _prune_shares(engine: Engine, root: Path, report: PruneReport, cutoff_ms: int) -> None:
    def query(last: int) -> Any:
        return (select(Share.id, Share.share_key, Share.miner_id, Miner.account, Share.worker,
                       Share.difficulty, Share.job_id, Share.revenue, Share.time_ms)
                .join(Miner, Miner.id == Share.miner_id, isouter=True)
                .where(Share.id > last, Share.id < report.reach_share_id,
                       Share.time_ms < cutoff_ms)
                .order_by(Share.id).limit(CHUNK))

    report.shares = _archive_rows(
        engine, root, report, kind="shares", query=query, id_column=Share.id,
        day_of=lambda r: _day(int(r.time_ms)), row=tuple,
        header=("id", "share_key", "miner_id", "account", "worker", "difficulty", "job_id",
                "revenue", "time_ms"))


def _prune_ledger(engine: Engine, root: Path, report: PruneReport, cutoff: datetime) -> None:
    settled = or_(LedgerEntry.block_id.is_(None),
                  Block.status.in_((BlockStatus.PAID, BlockStatus.ORPHANED)))

    def query(last: int) -> Any:
        return (select(LedgerEntry.id, LedgerEntry.miner_id, Miner.account,
                       LedgerEntry.block_id, Block.block_hash, LedgerEntry.amount,
                       LedgerEntry.reason, LedgerEntry.created_at)
                .join(Miner, Miner.id == LedgerEntry.miner_id)
                .join(Block, Block.id == LedgerEntry.block_id, isouter=True)
                .where(LedgerEntry.id > last, LedgerEntry.created_at < cutoff, settled)
                .order_by(LedgerEntry.id).limit(CHUNK))

    report.ledger_lines = _archive_rows(
        engine, root, report, kind="ledger", query=query, id_column=LedgerEntry.id,
        day_of=lambda r: r.created_at.date().isoformat(),
        row=lambda r: (r.id, r.miner_id, r.account, r.block_id,
                       None if r.block_hash is None else display_hex(bytes(r.block_hash)),
                       r.amount, r.reason, r.created_at.isoformat()),
        header=("id", "miner_id", "account", "block_id", "block_hash", "amount", "reason",
                "created_at"))


def _prune_distributions(engine: Engine, root: Path, report: PruneReport,
                         cutoff: datetime) -> None:
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(Distribution.distribution_id))).scalar()
        used = select(Block.distribution_id).where(Block.distribution_id.is_not(None))
        rows = conn.execute(
            select(Distribution.distribution_id, Distribution.created_at, Distribution.body)
            .where(Distribution.created_at < cutoff, Distribution.distribution_id != newest,
                   Distribution.distribution_id.not_in(used))
            .order_by(Distribution.distribution_id)).all()
    if not rows:
        return
    report.distributions = len(rows)
    if report.dry_run:
        return
    for day, group in _by_day(rows, lambda r: r.created_at.date().isoformat()).items():
        path = (root / "distributions" / day /
                f"ids-{group[0].distribution_id}-{group[-1].distribution_id}.jsonl.gz")
        _write(path, None, [(json.dumps({"distribution_id": r.distribution_id,
                                         "created_at": r.created_at.isoformat(),
                                         "body": json.loads(r.body)}),) for r in group],
               jsonl=True)
        report.files.append(path)
    ids = [int(r.distribution_id) for r in rows]
    with engine.begin() as conn:
        for i in range(0, len(ids), CHUNK):
            conn.execute(delete(Distribution).where(
                Distribution.distribution_id.in_(ids[i:i + CHUNK])))


def _prune_events(engine: Engine, report: PruneReport) -> None:
    with engine.connect() as conn:
        oldest = conn.execute(select(func.min(Share.id))).scalar()
        keep_d = conn.execute(select(func.max(AccountingEvent.id)).where(
            AccountingEvent.kind == "difficulty")).scalar()
    floor = int(oldest) if oldest is not None else report.reach_share_id
    gone = and_(AccountingEvent.after_share_id < floor - 1,
                AccountingEvent.id != (keep_d if keep_d is not None else -1))
    with engine.connect() as conn:
        report.events = int(conn.execute(
            select(func.count()).select_from(AccountingEvent).where(gone)).scalar_one())
    if report.events and not report.dry_run:
        with engine.begin() as conn:
            conn.execute(delete(AccountingEvent).where(gone))


__all__ = ["PruneReport", "archive_dir", "prune", "reach_share_id"]
