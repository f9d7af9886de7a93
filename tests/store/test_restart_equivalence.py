"""ARCHITECTURE invariant 7: after any restart the window, its weights and the next distribution
equal an uninterrupted run's (issue #11), for every scheme, on SQLite and PostgreSQL.

A run is a random sequence of share batches (some re-sent), network difficulty reports from the
node (nBits, exact), blocks found (a distribution published and a block recorded on it: PROP
closes its round), snapshots, and restarts (a new PoolService on the same store). The reference
is one Accountant fed the same events in memory, never restarted, never snapshotted.
"""

from __future__ import annotations

import hashlib
import logging
import random
from fractions import Fraction
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from payouts.accounting.accountant import Accountant
from payouts.distribution.stored import fitted_to_json
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.store.accounting_models import AccountingSnapshot
from payouts.store.accounting_state import load_events, load_latest_snapshot
from payouts.tx.block import difficulty_from_bits
from payouts.window_keeper import ImplausibleDifficultyError
from tests.store.conftest import make_batch

POOL = "0014" + "aa" * 20
N_MINERS = 7
# Regtest nBits from a hard target (small D) to powLimit: exact difficulties around 1e-9..2e-4.
BITS = [0x207FFFFF, 0x2000FFFF, 0x1F7FFFFF, 0x1F00FFFF, 0x1E7FFFFF]


def settings(tmp_path: Path, scheme: str) -> Settings:
    return Settings(
        data_dir=tmp_path, network="regtest",
        accounting={"scheme": scheme, "tides_k": 3, "pplns_n": 40},
        pool={"payout_script": POOL, "fee_bps": 100},
        distribution={"max_outputs_bytes": 31 + 43 * 3},  # some payees go to the owed ledger
    )


def p2tr(i: int) -> bytes:
    return bytes.fromhex("5120") + bytes([i + 1]) * 32


class Run:
    """One scripted run on a store, against the in-memory reference."""

    def __init__(self, engine: Engine, tmp_path: Path, scheme: str, seed: int) -> None:
        self.engine, self.tmp_path, self.scheme = engine, tmp_path, scheme
        self.rng = random.Random(seed)
        self.svc = PoolService(settings(tmp_path, scheme), engine=engine)
        self.miners = [self.svc.register_miner(f"m{i}", p2tr(i)).id for i in range(N_MINERS)]
        self.ref = Accountant(settings(tmp_path, scheme).accounting)
        self.keys = 0
        self.sent: list[object] = []
        self.blocks = 0
        self.restarts = self.snapshots = 0

    def batch(self) -> None:
        rng = self.rng
        if self.sent and rng.random() < 0.15:
            b = rng.choice(self.sent)  # a re-send: acknowledged again, counted once
            assert self.svc.ingest(b).accepted == 0  # type: ignore[arg-type]
            return
        n = rng.randint(1, 12)
        # Difficulties far above the TIDES cut so that k·D decides the window, not one share.
        b = make_batch([f"s{self.keys + i}" for i in range(n)],
                       miner_id=[rng.choice(self.miners) for _ in range(n)],
                       difficulty=[rng.randint(1, 50) * 10**5 for _ in range(n)],
                       revenue=[rng.randint(1, 5) * 10**8 for _ in range(n)])
        self.keys += n
        assert self.svc.ingest(b).accepted == n
        self.ref.ingest(b)
        self.sent.append(b)

    def difficulty(self) -> None:
        bits = self.rng.choice(BITS)
        before = self.svc.window.node_bits
        assert self.svc.window.on_network_bits(bits) == (bits != before)  # recorded if new
        self.ref.set_network_difficulty(difficulty_from_bits(bits))

    def block(self) -> None:
        fitted = self.svc.publish_distribution(312_500_000)
        self.blocks += 1
        self.svc.record_block(distribution_id=fitted.distribution.distribution_id,
                              revenue=self.rng.randint(3, 6) * 10**8,
                              block_hash=self.blocks.to_bytes(32, "big"), height=100 + self.blocks)
        self.ref.on_block_found()

    def snapshot(self) -> None:
        self.svc.window.take_snapshot()
        self.snapshots += 1

    def restart(self) -> None:
        self.svc = PoolService(settings(self.tmp_path, self.scheme), engine=self.engine)
        self.restarts += 1

    def check(self) -> None:
        acc, ref = self.svc.accountant, self.ref
        got, want = acc.weights(), ref.weights()
        assert got.miner_ids.tolist() == want.miner_ids.tolist()
        assert got.weights == want.weights
        assert (acc.share_count, acc.total_weight) == (ref.share_count, ref.total_weight)
        assert acc.network_difficulty == ref.network_difficulty


@pytest.mark.parametrize("scheme", ["tides", "pplns", "prop"])
@pytest.mark.parametrize("seed", [1, 2])
def test_restarts_at_random_points_equal_an_uninterrupted_run(
    engine: Engine, tmp_path: Path, scheme: str, seed: int
) -> None:
    run = Run(engine, tmp_path, scheme, seed)
    run.difficulty()
    steps = [run.batch] * 10 + [run.difficulty] * 2 + [run.block] * 2 + [run.snapshot] * 2 + [
        run.restart] * 3
    for _ in range(160):
        run.rng.choice(steps)()
        run.check()
    run.restart()
    run.check()
    assert run.restarts >= 10 and run.snapshots >= 5 and run.blocks >= 5
    # The next distribution equals the one a never-restarted service (same store, rebuilt
    # from every share and event, no snapshot) publishes: same payees, weights, owed lines.
    nxt = fitted_to_json(run.svc.publish_distribution(312_500_000))
    run.svc.window.reload()
    run.check()
    again = fitted_to_json(run.svc.publish_distribution(312_500_000))
    for doc in (nxt, again):
        doc.pop("distribution_id")
    assert nxt == again


def test_prop_round_survives_a_restart(engine: Engine, tmp_path: Path) -> None:
    """The measured bug: a PROP window of 10 shares became 110 after a restart (the round
    already paid came back)."""
    svc = PoolService(settings(tmp_path, "prop"), engine=engine)
    m = svc.register_miner("m0", p2tr(0)).id
    svc.ingest(make_batch([f"a{i}" for i in range(100)], miner_id=m))
    fitted = svc.publish_distribution(312_500_000)
    svc.record_block(distribution_id=fitted.distribution.distribution_id, revenue=312_500_000,
                     block_hash=b"\x01" * 32, height=101)
    svc.ingest(make_batch([f"b{i}" for i in range(10)], miner_id=m))
    assert svc.accountant.share_count == 10
    (ev,) = load_events(engine)
    assert (ev.kind, ev.block_id) == ("round", 1)
    assert PoolService(settings(tmp_path, "prop"), engine=engine).accountant.share_count == 10


def test_snapshot_restart_reads_only_the_shares_after_it(engine: Engine, tmp_path: Path) -> None:
    svc = PoolService(settings(tmp_path, "pplns"), engine=engine)
    m = svc.register_miner("m0", p2tr(0)).id
    svc.ingest(make_batch([f"a{i}" for i in range(500)], miner_id=m))
    svc.window.take_snapshot()
    # memory keeps the window (40 shares), not the 500 ingested
    assert svc.accountant.log.first_row == svc.accountant.window.start == 460
    svc.ingest(make_batch([f"b{i}" for i in range(7)], miner_id=m))
    again = PoolService(settings(tmp_path, "pplns"), engine=engine)
    snap = load_latest_snapshot(engine)
    assert snap is not None and again.window.restored.snapshot_id == snap.id
    assert again.window.restored.shares == 7
    assert again.accountant.weights().weights == svc.accountant.weights().weights


@pytest.mark.parametrize("damage", ["checksum", "version", "settings", "garbage"])
def test_unusable_snapshot_is_detected_and_rebuilt_from_the_store(
    engine: Engine, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = PoolService(settings(tmp_path, "tides"), engine=engine)
    svc.window.on_network_bits(0x1F00FFFF)
    m = svc.register_miner("m0", p2tr(0)).id
    svc.ingest(make_batch([f"a{i}" for i in range(300)], miner_id=m, difficulty=10**6))
    sid = svc.window.take_snapshot()
    snap = load_latest_snapshot(engine)
    assert snap is not None
    body = bytearray(snap.body)
    values: dict[str, object] = {}
    if damage == "checksum":
        body[-1] ^= 1
        values = {"body": bytes(body)}
    elif damage == "version":
        new = snap.body.replace(b'"version": 2', b'"version": 9')
        values = {"body": new, "checksum": hashlib.sha256(new).hexdigest()}
    elif damage == "settings":
        new = snap.body.replace(b"tides|k=3", b"tides|k=4")
        values = {"body": new, "checksum": hashlib.sha256(new).hexdigest()}
    else:
        new = b"not a snapshot"
        values = {"body": new, "checksum": hashlib.sha256(new).hexdigest()}
    with engine.begin() as conn:
        conn.execute(update(AccountingSnapshot).where(AccountingSnapshot.id == sid)
                     .values(**values))
    with caplog.at_level(logging.WARNING, logger="payouts.accounting"):
        again = PoolService(settings(tmp_path, "tides"), engine=engine)
    assert f"accounting snapshot {sid} is unusable" in caplog.text
    assert "rebuilding the window from the stored shares" in caplog.text
    assert again.window.restored.snapshot_id is None and again.window.restored.shares == 300
    assert again.accountant.weights().weights == svc.accountant.weights().weights
    assert again.accountant.network_difficulty == difficulty_from_bits(0x1F00FFFF)


def test_tides_reaches_back_into_the_store_after_d_rises(
    engine: Engine, tmp_path: Path
) -> None:
    """A snapshot drops the rows before the window; D rising afterwards makes the window want
    them again: it is rebuilt from the store, equal to a run that never dropped them."""
    svc = PoolService(settings(tmp_path, "tides"), engine=engine)
    svc.window.on_network_bits(0x1F00FFFF)  # D ≈ 2.4e-4... k·D tiny: the window is 1 share
    m = [svc.register_miner(f"m{i}", p2tr(i)).id for i in range(3)]
    ref = Accountant(settings(tmp_path, "tides").accounting,
                     network_difficulty=difficulty_from_bits(0x1F00FFFF))
    for j in range(5):
        b = make_batch([f"{j}-{i}" for i in range(200)], miner_id=[m[i % 3] for i in range(200)],
                       difficulty=1)
        svc.ingest(b)
        ref.ingest(b)
    svc.window.take_snapshot()
    assert svc.accountant.share_count == 1
    assert svc.accountant.log.first_row == 999  # the rows before the window are forgotten
    pin = Fraction(300)  # k·D = 900 shares of difficulty 1: reaches back into the store
    svc.settings.accounting.pin_difficulty = 300
    assert svc.window.on_network_bits(0x1F7FFFFF)
    ref.set_network_difficulty(pin)
    assert svc.accountant.share_count == ref.share_count == 900
    assert svc.accountant.weights().weights == ref.weights().weights


def test_implausible_difficulty_is_refused_and_changes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    svc = PoolService(settings(tmp_path, "tides"), engine=engine)
    svc.window.on_network_bits(0x1F00FFFF)
    before = svc.accountant.network_difficulty
    # overflowing, zero, negative, easier than powLimit
    for bits in (0x23000001, 0x00000000, 0x1F800001, 0x2100FFFF):
        with pytest.raises(ImplausibleDifficultyError):
            svc.window.on_network_bits(bits)
    main = Settings(data_dir=tmp_path, network="mainnet", pool={"payout_script": POOL})
    mk = PoolService(main, engine=engine)
    assert mk.window.node_bits == 0x1F00FFFF  # the store's last report
    with pytest.raises(ImplausibleDifficultyError, match="proof-of-work limit"):
        mk.window.check_bits(0x1F00FFFF)  # regtest's is far below mainnet's diff-1 floor
    mk.window.node_bits = 0x1805A4E3  # a mainnet-like difficulty (about 3e11 ... exact)
    with pytest.raises(ImplausibleDifficultyError, match="retarget"):
        mk.window.check_bits(0x1705A4E3)  # 256× harder in one report
    assert mk.window.check_bits(0x18040000) > 0  # within a factor 4
    assert svc.accountant.network_difficulty == before and len(load_events(engine)) == 1
