"""Share ingest: idempotent, all-or-nothing, durable on return (invariants 5 and 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from payouts.errors import (
    DuplicateKeyError,
    InvalidDifficultyError,
    InvalidRevenueError,
    PayoutsError,
    UnknownMinerError,
    ValidationError,
)
from payouts.store.engine import make_engine
from payouts.store.repositories import (
    iter_share_chunks,
    iter_shares,
    persist_shares,
    register_miner,
)
from tests.store.conftest import count, make_batch

P2WPKH = bytes.fromhex("0014") + bytes(20)


@pytest.fixture
def miners(engine: Engine) -> list[int]:
    return [register_miner(engine, f"m{i}", P2WPKH).id for i in range(3)]


def _keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


def test_new_batch_then_resend_is_idempotent(engine: Engine, miners: list[int]) -> None:
    batch = make_batch(_keys("a", 500), miner_id=[miners[i % 3] for i in range(500)])
    new = persist_shares(engine, batch)
    assert new.tolist() == list(range(500))
    assert count(engine, "shares") == 500
    again = persist_shares(engine, batch)
    assert again.size == 0 and again.dtype == np.intp
    assert count(engine, "shares") == 500


def test_partial_overlap_inserts_only_new_keys(engine: Engine, miners: list[int]) -> None:
    persist_shares(engine, make_batch(_keys("k", 10), miner_id=miners[0]))
    keys = ["k000003", "n0", "k000007", "n1", "n2", "k000000"]
    batch = make_batch(keys, miner_id=miners[1], difficulty=[5, 6, 7, 8, 9, 10])
    new = persist_shares(engine, batch)
    assert new.tolist() == [1, 3, 4]
    assert count(engine, "shares") == 13
    stored = {
        k: (int(m), int(d))
        for b in iter_shares(engine)
        for k, m, d in zip(b.key, b.miner_id, b.difficulty, strict=True)
    }
    # Existing rows are untouched (still miner 0, difficulty 1024); new rows are as sent.
    assert stored["k000003"] == (miners[0], 1024)
    assert stored["n0"] == (miners[1], 6) and stored["n2"] == (miners[1], 9)


def test_empty_batch(engine: Engine, miners: list[int]) -> None:
    assert persist_shares(engine, make_batch([])).size == 0
    assert count(engine, "shares") == 0


def _bad_batches(miners: list[int]) -> list[tuple[str, object, type[PayoutsError], str]]:
    keys = _keys("bad", 20)
    m = miners[0]
    return [
        (
            "unknown miner",
            make_batch(keys, miner_id=[m] * 19 + [999_999]),
            UnknownMinerError,
            "999999",
        ),
        (
            "zero difficulty",
            make_batch(keys, miner_id=m, difficulty=[1] * 19 + [0]),
            InvalidDifficultyError,
            "bad000019",
        ),
        (
            "negative difficulty",
            make_batch(keys, miner_id=m, difficulty=[-5] + [1] * 19),
            InvalidDifficultyError,
            "bad000000",
        ),
        (
            "duplicate key",
            make_batch([*keys[:19], keys[3]], miner_id=m),
            DuplicateKeyError,
            "bad000003",
        ),
        (
            "negative revenue",
            make_batch(keys, miner_id=m, revenue=[0] * 19 + [-1]),
            InvalidRevenueError,
            "revenue",
        ),
        (
            "key too long",
            make_batch([*keys[:19], "x" * 65], miner_id=m),
            ValidationError,
            "longer than 64",
        ),
        ("empty key", make_batch([*keys[:19], ""], miner_id=m), ValidationError, "key"),
        ("NUL in worker", make_batch(keys, miner_id=m), ValidationError, "NUL"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_raises_and_writes_nothing(engine: Engine, miners: list[int], case: int) -> None:
    persist_shares(engine, make_batch(_keys("ok", 5), miner_id=miners[0]))
    name, batch, exc_type, needle = _bad_batches(miners)[case]
    if name == "NUL in worker":
        batch = make_batch(_keys("bad", 20), miner_id=miners[0])
        batch.worker[7] = "rig\x00"  # type: ignore[index]
    before = count(engine, "shares")
    with pytest.raises(exc_type) as info:
        persist_shares(engine, batch)  # type: ignore[arg-type]
    assert needle in str(info.value), name
    assert info.value.code == exc_type.code
    assert count(engine, "shares") == before == 5
    # The valid rows of the rejected batch were not written either: they are all new now.
    assert persist_shares(engine, make_batch(_keys("bad", 3), miner_id=miners[0])).size == 3


def test_float_column_is_rejected(engine: Engine, miners: list[int]) -> None:
    batch = make_batch(_keys("f", 3), miner_id=miners[0])
    bad = type(batch)(
        batch.key,
        batch.miner_id,
        batch.worker,
        batch.difficulty,
        batch.job_id,
        batch.revenue.astype(np.float64),
        batch.time_ms,
    )  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="integers"):
        persist_shares(engine, bad)
    assert count(engine, "shares") == 0


def test_iter_shares_round_trips_in_arrival_order(engine: Engine, miners: list[int]) -> None:
    first = make_batch(
        ["z9", "a1", "m5"],
        miner_id=[miners[2], miners[0], miners[1]],
        difficulty=[3, 1, 2],
        revenue=[7, 0, 2**40],
    )
    persist_shares(engine, first)
    persist_shares(engine, make_batch(_keys("b", 8), miner_id=miners[1]))
    chunks = list(iter_shares(engine, chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 2]
    assert list(chunks[0].key) == ["z9", "a1", "m5"]
    assert chunks[0].miner_id.tolist() == [miners[2], miners[0], miners[1]]
    assert chunks[0].difficulty.tolist() == [3, 1, 2]
    assert chunks[0].revenue.tolist() == [7, 0, 2**40]
    assert chunks[0].time_ms.tolist() == first.time_ms.tolist()
    assert list(chunks[0].worker) == list(first.worker)
    assert list(chunks[0].job_id) == list(first.job_id)
    assert chunks[0].miner_id.dtype == np.int64
    all_keys = [k for c in chunks for k in c.key]
    assert all_keys == ["z9", "a1", "m5", *_keys("b", 8)]
    ids = np.concatenate([i for i, _ in iter_share_chunks(engine, chunk=4)])
    assert (np.diff(ids) > 0).all()
    tail = list(iter_shares(engine, after_id=int(ids[8])))
    assert [k for c in tail for k in c.key] == all_keys[9:]


def test_a_new_engine_sees_acknowledged_rows(engine: Engine, miners: list[int]) -> None:
    persist_shares(engine, make_batch(_keys("d", 50), miner_id=miners[0]))
    other = make_engine(engine.url)
    try:
        assert count(other, "shares") == 50
    finally:
        other.dispose()


def test_acknowledged_batch_survives_process_death(
    engine: Engine, miners: list[int], tmp_path: Path
) -> None:
    # The child persists, prints, then dies without any cleanup (no dispose, no atexit):
    # what was acknowledged must already be committed.
    script = textwrap.dedent(f"""
        import os, sys
        from payouts.store.engine import make_engine
        from payouts.store.repositories import persist_shares
        from tests.store.conftest import make_batch
        engine = make_engine(sys.argv[1])
        new = persist_shares(engine, make_batch([f"crash{{i}}" for i in range(1000)],
                                                miner_id={miners[0]}))
        print(len(new), flush=True)
        os._exit(0)
    """)
    url = engine.url.render_as_string(hide_password=False)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script, url],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1000"
    assert count(engine, "shares") == 1000


def test_concurrent_overlapping_batches_insert_each_key_once(
    engine: Engine, miners: list[int]
) -> None:
    keys = _keys("c", 3000)
    batches = [make_batch(keys[i * 500 : i * 500 + 1500], miner_id=miners[i % 3]) for i in range(4)]
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            b = batches[i]
            results[i] = [b.key[j] for j in persist_shares(engine, b).tolist()]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    inserted = [k for r in results.values() for k in r]
    assert len(inserted) == len(set(inserted)) == count(engine, "shares") == 3000


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_new_index_is_exactly_the_unseen_keys(
    engine: Engine, miners: list[int], data: st.DataObject
) -> None:
    # Each example uses its own key space so earlier examples do not interfere.
    space = data.draw(st.uuids()).hex[:8]
    seen: set[str] = set(k for b in iter_shares(engine) for k in b.key)
    start = len(seen)
    for _ in range(data.draw(st.integers(1, 4))):
        ids = data.draw(st.lists(st.integers(0, 40), unique=True, max_size=25))
        keys = [f"{space}-{i}" for i in ids]
        new = persist_shares(engine, make_batch(keys, miner_id=miners[0]))
        assert [keys[i] for i in new.tolist()] == [k for k in keys if k not in seen]
        seen.update(keys)
    assert count(engine, "shares") == len(seen) >= start
