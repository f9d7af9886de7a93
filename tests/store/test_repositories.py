"""Miners, distributions, blocks and the append-only owed-balance ledger."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine

from payouts.errors import DuplicateKeyError, UnknownMinerError, ValidationError
from payouts.store.repositories import (
    LedgerCredit,
    append_ledger_entries,
    export_ledger,
    get_block,
    get_block_by_hash,
    get_miner,
    get_miner_by_account,
    get_miners,
    last_distribution_id,
    ledger_balance,
    ledger_balances,
    list_blocks,
    load_distribution,
    miner_ids,
    orphan_block,
    record_block,
    register_miner,
    save_distribution,
    set_block_status,
)
from tests.store.conftest import count

SCRIPT = bytes.fromhex("0014") + bytes(range(20))
BODY = {
    "distribution_id": 7,
    "pool_payout": {"script": "51", "weight": 10},
    "payouts": [{"script": "0014" + "00" * 20, "weight": 2**62}],
}


def _hash(i: int) -> bytes:
    return i.to_bytes(32, "little")


def test_miners(engine: Engine) -> None:
    a = register_miner(engine, "alice", SCRIPT, musig_pubkey=b"\x02" + bytes(32))
    b = register_miner(engine, "bob", SCRIPT)
    assert a.id != b.id and a.created_at.tzinfo is not None
    assert get_miner_by_account(engine, "alice") == a
    assert get_miner(engine, b.id) == b
    assert get_miner_by_account(engine, "carol") is None
    assert get_miners(engine, [a.id, b.id, 12345]) == {a.id: a, b.id: b}
    assert miner_ids(engine, ["bob", "alice", "zed"]) == {"alice": a.id, "bob": b.id}
    with pytest.raises(DuplicateKeyError):
        register_miner(engine, "alice", SCRIPT)
    for bad in [
        ("", SCRIPT, None),
        ("x" * 65, SCRIPT, None),
        ("c", b"", None),
        ("c", SCRIPT, b"\x02" * 5),
    ]:
        with pytest.raises(ValidationError):
            register_miner(engine, *bad)
    assert count(engine, "miners") == 2


def test_distributions(engine: Engine) -> None:
    assert last_distribution_id(engine) is None
    save_distribution(engine, 7, BODY)
    rec = load_distribution(engine, 7)
    assert rec is not None and rec.body == BODY and rec.distribution_id == 7
    assert isinstance(rec.body["payouts"][0]["weight"], int)
    for bad_id in (7, 3):
        with pytest.raises(ValidationError) as info:
            save_distribution(engine, bad_id, BODY)
        assert info.value.code == "non-increasing-distribution-id"
    with pytest.raises(ValidationError, match="float"):
        save_distribution(engine, 8, {"pool_payout": {"weight": 1.5}})
    assert count(engine, "distributions") == 1
    save_distribution(engine, 9, BODY)
    assert last_distribution_id(engine) == 9
    assert load_distribution(engine, 8) is None


def test_block_with_credits_is_atomic_and_balances_sum(engine: Engine) -> None:
    a = register_miner(engine, "a", SCRIPT).id
    b = register_miner(engine, "b", SCRIPT).id
    save_distribution(engine, 1, BODY)
    blk = record_block(
        engine,
        height=100,
        block_hash=_hash(1),
        revenue=312_500_000,
        distribution_id=1,
        credits=[
            LedgerCredit(a, 500, "below-dust"),
            LedgerCredit(b, 40, "x"),
            LedgerCredit(a, 25, "did-not-fit"),
        ],
    )
    assert blk.status == "found" and get_block_by_hash(engine, _hash(1)) == blk
    assert ledger_balances(engine) == {a: 525, b: 40}

    # Any bad part of a block record writes nothing at all (no block row, no ledger line).
    before = (count(engine, "blocks"), count(engine, "ledger_entries"))
    bad_calls = [
        dict(block_hash=_hash(2), credits=[LedgerCredit(a, 1, "x"), LedgerCredit(99, 1, "x")]),
        dict(block_hash=_hash(1), credits=[]),
        dict(block_hash=_hash(2), credits=[LedgerCredit(a, 0, "zero")]),
        dict(block_hash=_hash(2), credits=[LedgerCredit(b, -41, "repay too much")]),
        dict(block_hash=_hash(2), distribution_id=55, credits=[]),
        dict(block_hash=b"short", credits=[]),
    ]
    expected = [
        UnknownMinerError,
        DuplicateKeyError,
        ValidationError,
        ValidationError,
        ValidationError,
        ValidationError,
    ]
    for kwargs, exc in zip(bad_calls, expected, strict=True):
        with pytest.raises(exc):
            record_block(engine, height=101, revenue=1, **kwargs)  # type: ignore[arg-type]
        assert (count(engine, "blocks"), count(engine, "ledger_entries")) == before
    assert ledger_balances(engine) == {a: 525, b: 40}

    # A later block repays b fully and part of a.
    blk2 = record_block(
        engine,
        height=101,
        block_hash=_hash(2),
        revenue=1,
        credits=[LedgerCredit(b, -40, "paid"), LedgerCredit(a, -25, "paid")],
    )
    assert ledger_balances(engine) == {a: 500, b: 0}
    assert ledger_balance(engine, b) == 0 and ledger_balance(engine, 424242) == 0
    with pytest.raises(ValidationError) as info:
        append_ledger_entries(engine, [LedgerCredit(a, -501, "too much")])
    assert info.value.code == "ledger-overdraft"
    ids = append_ledger_entries(engine, [LedgerCredit(a, -500, "manual payout")])
    assert len(ids) == 1 and ledger_balance(engine, a) == 0
    assert get_block(engine, blk2.id) == blk2


def test_orphan_reverses_exactly_and_lifecycle(engine: Engine) -> None:
    a = register_miner(engine, "a", SCRIPT).id
    b = register_miner(engine, "b", SCRIPT).id
    append_ledger_entries(engine, [LedgerCredit(a, 1000, "earlier")])
    before = ledger_balances(engine)
    blk = record_block(
        engine,
        height=5,
        block_hash=_hash(5),
        revenue=10,
        credits=[
            LedgerCredit(a, 300, "x"),
            LedgerCredit(b, 70, "y"),
            LedgerCredit(a, -200, "repaid"),
        ],
    )
    assert ledger_balances(engine) == {a: 1100, b: 70}
    assert set_block_status(engine, blk.id, "confirmed").status == "confirmed"
    with pytest.raises(ValidationError) as info:
        set_block_status(engine, blk.id, "found")
    assert info.value.code == "invalid-block-transition"
    reversal = orphan_block(engine, blk.id)
    assert len(reversal) == 2
    assert ledger_balances(engine) == {**before, b: 0}
    assert get_block(engine, blk.id).status == "orphaned"  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        orphan_block(engine, blk.id)
    with pytest.raises(ValidationError):
        set_block_status(engine, blk.id, "mature")
    assert [x.id for x in list_blocks(engine, "orphaned")] == [blk.id]
    assert list_blocks(engine, "found") == []


def test_export_ledger_is_json_able(engine: Engine) -> None:
    a = register_miner(engine, "alice", SCRIPT).id
    blk = record_block(
        engine, height=1, block_hash=_hash(9), revenue=5, credits=[LedgerCredit(a, 2**50, "big")]
    )
    append_ledger_entries(engine, [LedgerCredit(a, -7, "paid")])
    rows = export_ledger(engine)
    assert json.loads(json.dumps(rows)) == rows
    assert [(r["account"], r["amount"], r["block_id"], r["block_hash"]) for r in rows] == [
        ("alice", 2**50, blk.id, _hash(9).hex()),
        ("alice", -7, None, None),
    ]
    assert rows[0]["created_at"].endswith("+00:00")


def test_miner_balance_hot_read_sees_each_commit(engine: Engine) -> None:
    """The API's balance read keeps one autocommit connection per thread: it must see every
    committed ledger line at once, and never hold a transaction open that blocks writers."""
    from payouts.store.ledger import miner_balance

    assert miner_balance(engine, "nobody") is None
    a = register_miner(engine, "a", SCRIPT).id
    assert miner_balance(engine, "a") == (a, SCRIPT, 0)
    append_ledger_entries(engine, [LedgerCredit(a, 700, "owed")])
    assert miner_balance(engine, "a") == (a, SCRIPT, 700)
    append_ledger_entries(engine, [LedgerCredit(a, -200, "repaid")])
    assert miner_balance(engine, "a") == (a, SCRIPT, 500)
    # A writer right after the read is not blocked by it (no idle transaction on SQLite's lock
    # or PostgreSQL's snapshot).
    register_miner(engine, "b", SCRIPT)
    assert miner_balance(engine, "b") is not None


def test_miner_balance_connection_never_returns_to_the_pool(engine: Engine) -> None:
    """Regression: the hot read's autocommit connection went back to the pool when the thread
    moved to another engine, and the next transaction on it ran outside a transaction block
    (PostgreSQL: "LOCK TABLE can only be used in transaction blocks")."""
    from payouts.store.engine import make_engine
    from payouts.store.ledger import miner_balance

    register_miner(engine, "a", SCRIPT)
    assert miner_balance(engine, "a") is not None
    other = make_engine(engine.url)
    try:
        assert miner_balance(other, "a") is not None  # the first engine's connection is closed
    finally:
        other.dispose()
    for i in range(1, 8):  # every pooled connection runs real transactions (LOCK TABLE on PG)
        save_distribution(engine, i, BODY)
    assert last_distribution_id(engine) == 7
    assert miner_balance(engine, "a") is not None


def test_trusted_distribution_text_is_json_dumps_byte_for_byte() -> None:
    """The service's own documents are encoded by msgspec (issue #11's publish at 100k miners);
    the stored text must stay exactly the canonical ``json.dumps`` text."""
    from payouts.store.repositories import canonical_json

    body = {"z": 1, "distribution_id": 2**63 - 1, "pool_payout": {"weight": str(2**200),
                                                                   "script": "0014" + "ab" * 20},
            "payouts": [{"weight": "5", "script": "51", "dust_limit": 330}] * 3,
            "accounts": ["m.1", "m-2", "m_3"], "owed": [0, -5, 2**62], "empty": [],
            "dropped": {"owed": [], "account": []}, "fee_weight": "0"}
    assert canonical_json(body, trusted=True) == canonical_json(body)
    assert canonical_json(body).startswith('{"accounts":["m.1"')
