"""Group commit in :meth:`payouts.window_keeper.WindowKeeper.ingest` (issue #17): batches that
wait for the writer's lock together are written in one transaction, and each caller still gets
its own count or its own error, with nothing of a refused batch written.

The tests hold the keeper's lock while several threads queue their batches, so the group is
formed for certain, then release it and check the store, the window and every answer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from payouts.accounting.shares import ShareBatch
from payouts.errors import PayoutsError
from payouts.service import PoolService
from payouts.settings import Settings
from tests.store.conftest import count, make_batch

P2WPKH = bytes.fromhex("0014") + bytes(20)


def _service(engine: Engine, tmp_path: Path) -> tuple[PoolService, int]:
    # PPLNS over the last 10,000 shares: the window holds every share these tests write.
    svc = PoolService(Settings(data_dir=tmp_path, network="regtest",
                               accounting={"scheme": "pplns", "pplns_n": 10_000},
                               pool={"payout_script": "0014" + "aa" * 20}), engine=engine)
    return svc, svc.register_miner("m0", P2WPKH).id


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch the keeper hands the store (one entry per transaction)."""
    from payouts import window_keeper

    sizes: list[int] = []
    real = window_keeper.persist_shares_with_ids

    def spy(engine: Engine, batch: ShareBatch):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return real(engine, batch)

    monkeypatch.setattr(window_keeper, "persist_shares_with_ids", spy)
    return sizes


def _grouped(svc: PoolService, batches: list[ShareBatch]) -> list[int | BaseException]:
    """Ingest ``batches`` from one thread each while the lock is held, so all queue up; then
    release it. Returns each thread's count or exception, in the order given."""
    keeper = svc.window
    out: list[int | BaseException] = [0] * len(batches)

    def run(i: int) -> None:
        try:
            out[i] = svc.ingest(batches[i]).accepted
        except BaseException as e:  # the test inspects it
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    with keeper.lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(keeper._queue) < len(batches):  # every thread has queued its batch
            assert time.monotonic() < deadline, "threads did not queue"
            time.sleep(0.001)
    for t in threads:
        t.join(10)
    return out


def test_queued_batches_commit_together_each_with_its_count(
        engine: Engine, tmp_path: Path, writes: list[int]) -> None:
    svc, m = _service(engine, tmp_path)
    assert svc.ingest(make_batch(["old-1", "old-2"], miner_id=m)).accepted == 2
    batches = [make_batch([f"b{i}-{j}" for j in range(5 + i)], miner_id=m, difficulty=1000 + i)
               for i in range(4)]
    batches.append(make_batch(["old-1", "new-x"], miner_id=m))  # one row already stored
    assert _grouped(svc, batches) == [5, 6, 7, 8, 1]
    assert writes == [2, 28]  # the five queued batches in one transaction
    assert count(engine, "shares") == 2 + 26 + 1
    assert svc.window.accountant.share_count == 2 + 26 + 1
    # ids ascend in the window in the order the rows were written
    assert svc.window.last_share_id == max(
        int(r[0]) for r in engine.connect().exec_driver_sql("SELECT id FROM shares"))


def test_a_bad_batch_in_the_group_fails_alone(engine: Engine, tmp_path: Path,
                                              writes: list[int]) -> None:
    svc, m = _service(engine, tmp_path)
    good = [make_batch([f"g{i}-{j}" for j in range(3)], miner_id=m) for i in range(3)]
    bad = make_batch(["bad-0", "bad-1"], miner_id=[m, m + 999])  # an unknown miner
    out = _grouped(svc, [good[0], bad, good[1], good[2]])
    assert out[0] == out[2] == out[3] == 3
    assert isinstance(out[1], PayoutsError) and out[1].code == "unknown-miner"
    assert writes == [11, 3, 2, 3, 3]  # the joint write refused, then one by one
    assert count(engine, "shares") == 9  # nothing of the bad batch
    assert svc.window.accountant.share_count == 9


def test_keys_shared_between_queued_batches_are_counted_once(
        engine: Engine, tmp_path: Path, writes: list[int]) -> None:
    svc, m = _service(engine, tmp_path)
    out = _grouped(svc, [make_batch(["k1", "k2"], miner_id=m),
                         make_batch(["k2", "k3"], miner_id=m)])
    assert sorted(out) == [1, 2]  # type: ignore[type-var]
    assert writes == [2, 2]  # not joined: a key in both
    assert count(engine, "shares") == 3
    assert svc.window.accountant.share_count == 3


def test_a_lone_batch_takes_the_plain_path(engine: Engine, tmp_path: Path,
                                           writes: list[int]) -> None:
    svc, m = _service(engine, tmp_path)
    assert _grouped(svc, [make_batch(["solo"], miner_id=m)]) == [1]
    assert writes == [1]
    assert count(engine, "shares") == 1
