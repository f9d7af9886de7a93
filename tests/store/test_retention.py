"""Retention (issue #11, docs/retention.md): old shares, settled ledger lines and unused
distributions leave the store for a readable archive; the window, a restart and every balance
are unchanged; a second run finds nothing; a dry run deletes nothing."""

from __future__ import annotations

import csv
import gzip
import json
import time
from pathlib import Path

from sqlalchemy import Engine

from payouts.retention import prune
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.store import repositories as repo
from payouts.store.accounting_state import load_events
from payouts.store.ledger import export_ledger, ledger_balances, set_block_status
from tests.store.conftest import count, make_batch

POOL = "0014" + "aa" * 20
DAY_MS = 86_400_000


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, network="regtest",
                    accounting={"scheme": "pplns", "pplns_n": 40},
                    pool={"payout_script": POOL, "fee_bps": 100},
                    distribution={"max_outputs_bytes": 31 + 43},  # one payee; the rest owed
                    retention={"keep_days": 7, "archive_dir": str(tmp_path / "arch")})


def p2tr(i: int) -> bytes:
    return bytes.fromhex("5120") + bytes([i + 1]) * 32


def test_prune_archives_what_is_old_and_out_of_reach(engine: Engine, tmp_path: Path) -> None:
    now = time.time()
    svc = PoolService(settings(tmp_path), engine=engine)
    svc.window.on_network_bits(0x207FFFFF)  # placed before every share; the window's D
    m = [svc.register_miner(f"m{i}", p2tr(i)).id for i in range(3)]
    old_ms = int((now - 30 * 86_400) * 1000)
    old = make_batch([f"old{i}" for i in range(300)], miner_id=[m[i % 3] for i in range(300)])
    old.time_ms[:] = old_ms + old.time_ms - old.time_ms[0]
    svc.ingest(old)
    fitted = svc.publish_distribution(312_500_000)  # block 1 pays m0, owes the others
    svc.record_block(distribution_id=fitted.distribution.distribution_id, revenue=312_500_000,
                     block_hash=b"\x01" * 32, height=101)
    svc.publish_distribution(312_500_000)  # never found: prunable once old
    newest = svc.publish_distribution(312_500_000)
    fresh = make_batch([f"new{i}" for i in range(30)], miner_id=m[1])
    fresh.time_ms[:] = int(now * 1000)
    svc.ingest(fresh)
    svc.window.take_snapshot()  # memory keeps what the window can reach
    window = svc.accountant.weights()
    balances = ledger_balances(engine)
    lines = export_ledger(engine)
    assert lines and any(b > 0 for b in balances.values())

    # Ledger lines go only once their block is settled for good.
    later = now + 30 * 86_400  # everything recorded today is old by then
    dry = prune(svc, now=later, dry_run=True)
    assert (dry.shares, dry.ledger_lines, dry.distributions) == (290, 0, 1)
    assert count(engine, "shares") == 330 and not (tmp_path / "arch").exists()
    set_block_status(engine, 1, "confirmed")
    set_block_status(engine, 1, "mature")
    set_block_status(engine, 1, "paid")
    report = prune(svc, now=later)
    # 300 old + 30 new; the PPLNS window is the last 40 (10 old, 30 new): 290 old are gone.
    assert report.shares == 290 and count(engine, "shares") == 40
    assert report.ledger_lines == len(lines) and count(engine, "ledger_entries") == 0
    assert report.distributions == 1
    assert {d for d in (1, 2, 3) if repo.load_distribution(engine, d)} == {
        1, newest.distribution.distribution_id}
    # Nothing the pool owes or the window holds changed.
    assert ledger_balances(engine) == balances
    assert svc.accountant.weights().weights == window.weights
    again = PoolService(settings(tmp_path), engine=engine)
    assert again.accountant.weights().weights == window.weights
    assert again.accountant.share_count == 40
    # The archive holds exactly what left, readable as CSV.
    rows = []
    for f in sorted((tmp_path / "arch" / "shares").rglob("*.csv.gz")):
        with gzip.open(f, "rt", newline="") as fh:
            r = list(csv.reader(fh))
        assert r[0][:4] == ["id", "share_key", "miner_id", "account"]
        rows += r[1:]
    assert sorted(int(r[0]) for r in rows) == list(range(1, 291))
    assert {r[3] for r in rows} == {"m0", "m1", "m2"}
    ledger_files = list((tmp_path / "arch" / "ledger").rglob("*.csv.gz"))
    with gzip.open(ledger_files[0], "rt", newline="") as fh:
        archived = list(csv.DictReader(fh))
    assert sum(int(x["amount"]) for x in archived) == sum(e["amount"] for e in lines)
    (dist_file,) = (tmp_path / "arch" / "distributions").rglob("*.jsonl.gz")
    with gzip.open(dist_file, "rt") as fh:
        assert json.loads(fh.readline())["distribution_id"] == 2
    # A second run finds nothing; the difficulty event the window uses is kept.
    assert prune(svc, now=later).shares == 0
    assert [(e.kind, e.after_share_id) for e in load_events(engine)] == [
        ("difficulty", 0), ("round", 300)]
    svc.window.on_network_bits(0x2000FFFF)
    prune(svc, now=later)
    assert [(e.kind, e.after_share_id) for e in load_events(engine)] == [
        ("round", 300), ("difficulty", 330)]  # the older difficulty no longer places a row


def test_prune_cli_dry_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from payouts.cli import app

    s = settings(tmp_path)
    svc = PoolService(s)
    svc.engine.dispose()
    env = {"PAYOUTS_DATA_DIR": str(tmp_path)}
    r = CliRunner().invoke(app, ["db", "prune", "--dry-run"], env=env)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("would archive and delete: 0 shares, 0 ledger lines")
