"""The pool service end to end on SQLite and PostgreSQL: durable ingest, restart, distributions,
blocks and the owed ledger."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payouts.distribution.fitting import CandidateColumns
from payouts.distribution.settle import settle_block
from payouts.errors import UnknownMinerError
from payouts.service import PoolService
from payouts.settings import Settings
from payouts.store import repositories as repo
from tests.distribution.service_reference import (
    old_candidates,
    old_fitted_from_json,
    old_publish_distribution,
    old_settle_block,
)
from tests.store.conftest import count, make_batch

POOL = "0014" + "aa" * 20


def p2tr(i: int) -> bytes:
    return bytes.fromhex("5120") + bytes([i]) * 32


def settings(tmp_path: Path, max_bytes: int = 10_000) -> Settings:
    return Settings(
        data_dir=tmp_path,
        accounting={"scheme": "pplns", "pplns_n": 1000, "value_weighting": True},
        pool={"payout_script": POOL, "fee_bps": 100},
        distribution={"max_outputs_bytes": max_bytes},
    )


def test_ingest_is_idempotent_and_survives_a_restart(engine: Engine, tmp_path: Path) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    ids = [svc.register_miner(f"m{i}", p2tr(i)).id for i in range(3)]
    batch = make_batch([f"k{i}" for i in range(30)], miner_id=[ids[i % 3] for i in range(30)],
                       difficulty=[1000 + i for i in range(30)])
    assert svc.ingest(batch).accepted == 30
    again = svc.ingest(batch)
    assert (again.accepted, again.duplicates) == (0, 30)
    before = svc.accountant.weights()
    restarted = PoolService(settings(tmp_path), engine=engine)
    after = restarted.accountant.weights()
    assert after.miner_ids.tolist() == before.miner_ids.tolist()
    assert after.weights == before.weights
    # value weighting: weight = difficulty x revenue
    assert sum(after.weights) == sum(1000 + i for i in range(30)) * 312_500_000


def test_bad_batch_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    svc = PoolService(settings(tmp_path), engine=engine)
    good = svc.register_miner("m0", p2tr(0)).id
    with pytest.raises(UnknownMinerError):
        svc.ingest(make_batch(["a", "b"], miner_id=[good, 999]))
    assert count(engine, "shares") == 0 and svc.accountant.share_count == 0


def test_dropped_payees_are_owed_then_repaid_first(engine: Engine, tmp_path: Path) -> None:
    # Room for the pool output and exactly one P2TR payee.
    svc = PoolService(settings(tmp_path, max_bytes=31 + 43), engine=engine)
    big = svc.register_miner("big", p2tr(1)).id
    small = svc.register_miner("small", p2tr(2)).id
    svc.ingest(make_batch([f"a{i}" for i in range(10)], miner_id=big, difficulty=3000))
    svc.ingest(make_batch([f"b{i}" for i in range(10)], miner_id=small, difficulty=1000))
    first = svc.publish_distribution(estimated_revenue=312_500_000)
    assert first.distribution.distribution_id == 1
    assert first.accounts == ("big",) and [c.account for c in first.dropped] == ["small"]
    s1 = svc.record_block(distribution_id=1, revenue=312_500_000, block_hash=b"\x01" * 32,
                          height=100).settlement
    owed = svc.owed()["small"]
    assert owed == s1.fair["small"] > 0
    assert sum(s1.paid.values()) + s1.pool_keeps + s1.credited - s1.repaid == 312_500_000
    second = svc.publish_distribution(estimated_revenue=312_500_000)
    assert second.distribution.distribution_id == 2
    assert second.accounts == ("small",)  # owed miners come first
    s2 = svc.record_block(distribution_id=2, revenue=312_500_000, block_hash=b"\x02" * 32,
                          height=101).settlement
    assert s2.repaid > 0
    assert svc.owed().get("small", 0) == owed + s2.credited_to("small") - s2.repaid


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_columnar_publish_equals_the_per_object_service(engine: Engine, tmp_path: Path,
                                                        seed: int) -> None:
    """Issue #2: candidates as columns, the stored JSON read from columns and blocks settled
    column-wise give the same candidates, stored documents and settlements as the per-object
    service (tests/distribution/service_reference.py), owed-only miners included."""
    rng = random.Random(seed)
    svc = PoolService(settings(tmp_path, max_bytes=31 + 43 * 4), engine=engine)
    ids = [svc.register_miner(f"m{i}", p2tr(i)).id for i in range(12)]
    early = [rng.choice(ids) for _ in range(600)]
    svc.ingest(make_batch([f"a{i}" for i in range(600)], miner_id=early,
                          difficulty=[rng.randint(1, 10**6) for _ in range(600)]))
    for n in range(1, 4):
        svc.publish_distribution(estimated_revenue=312_500_000)
        svc.record_block(distribution_id=n, revenue=rng.randint(10**6, 10**9),
                         block_hash=bytes([n]) * 32, height=100 + n)
    # a new window of the first half of the miners only: the others are owed-only candidates
    late = [rng.choice(ids[:6]) for _ in range(1000)]
    svc.ingest(make_batch([f"b{i}" for i in range(1000)], miner_id=late,
                          difficulty=[rng.randint(1, 10**6) for _ in range(1000)]))
    assert svc.candidates() == CandidateColumns.of(old_candidates(svc))
    assert any(o and not w for w, o in zip(svc.candidates().weights, svc.candidates().owed,
                                          strict=True))
    new = svc.publish_distribution(estimated_revenue=312_500_000)
    old = old_publish_distribution(svc, estimated_revenue=312_500_000)
    stored_new = repo.load_distribution(engine, new.distribution.distribution_id)
    stored_old = repo.load_distribution(engine, old.distribution.distribution_id)
    assert stored_new is not None and stored_old is not None
    assert dict(stored_new.body, distribution_id=0) == dict(stored_old.body, distribution_id=0)
    loaded = svc.distribution(new.distribution.distribution_id)
    assert loaded == old_fitted_from_json(stored_new.body) and loaded.accounts == new.accounts
    accounts = [*loaded.accounts, *(c.account for c in loaded.dropped)]
    balances = {a: b for a, b in svc.owed().items() if a in accounts}
    want = old_settle_block(old_fitted_from_json(stored_new.body), 200_000_000, "z", balances)
    assert settle_block(loaded, 200_000_000, "z", balances) == want
    assert want.entries  # the comparison covered ledger lines
