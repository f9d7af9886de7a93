"""Fitting to byte/sigop budgets, the owed ledger, and conservation across blocks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.distribution.fitting import Budget, Candidate, fee_weight, fit_distribution
from payouts.distribution.ledger import LedgerEntry, OwedLedger
from payouts.distribution.settle import settle_block
from payouts.errors import BudgetTooSmallError, ValidationError, ZeroWeightError
from payouts.tx.output_scripts import output_size, sigop_cost

POOL = bytes.fromhex("0014") + b"\xaa" * 20


def p2tr(i: int) -> bytes:
    return bytes.fromhex("5120") + i.to_bytes(32, "big")


def p2pkh(i: int) -> bytes:
    return bytes.fromhex("76a914") + i.to_bytes(20, "big") + bytes.fromhex("88ac")


def test_budget_too_small_for_the_pool_payout() -> None:
    with pytest.raises(BudgetTooSmallError):
        fit_distribution(1, POOL, [], fee_bps=100, budget=Budget(30), estimated_revenue=10**8)
    with pytest.raises(BudgetTooSmallError):
        fit_distribution(1, p2pkh(0), [Candidate("a", p2tr(1), 5)], fee_bps=100,
                         budget=Budget(1000, max_sigops=3), estimated_revenue=10**8)


def test_zero_weight_window_without_fee_rejected() -> None:
    with pytest.raises(ZeroWeightError):
        fit_distribution(1, POOL, [], fee_bps=0, budget=Budget(1000), estimated_revenue=10**8)


def test_bad_candidates_rejected() -> None:
    with pytest.raises(ValidationError):
        fit_distribution(1, POOL, [Candidate("a", p2tr(1), -1)], fee_bps=0,
                         budget=Budget(1000), estimated_revenue=10**8)
    with pytest.raises(ValidationError, match="twice"):
        fit_distribution(1, POOL, [Candidate("a", p2tr(1), 1), Candidate("a", p2tr(2), 1)],
                         fee_bps=0, budget=Budget(1000), estimated_revenue=10**8)


def test_largest_first_and_the_rest_dropped() -> None:
    cands = [Candidate(f"m{i}", p2tr(i), 100 + i) for i in range(10)]
    budget = Budget(output_size(POOL) + 3 * 43)  # room for exactly three P2TR payees
    f = fit_distribution(5, POOL, cands, fee_bps=200, budget=budget, estimated_revenue=10**8)
    assert f.accounts == ("m9", "m8", "m7")
    assert {c.account for c in f.dropped} == {f"m{i}" for i in range(7)}
    # the pool payout carries the fee weight plus the dropped payees' weight
    assert f.distribution.pool_payout.weight == f.fee_weight + sum(100 + i for i in range(7))
    assert f.distribution.max_outputs_size() <= budget.max_bytes


def test_sigop_budget_limits_p2pkh_payees() -> None:
    cands = [Candidate(f"m{i}", p2pkh(i), 1000) for i in range(5)]
    f = fit_distribution(1, POOL, cands, fee_bps=0, budget=Budget(10_000, max_sigops=8),
                         estimated_revenue=10**8)
    assert len(f.distribution.payouts) == 2
    assert sum(sigop_cost(p.script) for p in f.distribution.payouts) == 8


def test_expected_dust_is_credited_not_given_an_output() -> None:
    cands = [Candidate("big", p2tr(1), 10**9), Candidate("tiny", p2tr(2), 1)]
    f = fit_distribution(1, POOL, cands, fee_bps=0, budget=Budget(10_000),
                         estimated_revenue=10**8)
    assert f.accounts == ("big",)
    assert [c.account for c in f.dropped] == ["tiny"]


def test_fee_weight_gives_the_fee_share() -> None:
    assert fee_weight(9_800, 200) == 200
    assert fee_weight(0, 200) == 0
    with pytest.raises(ValidationError):
        fee_weight(1, 10_000)


def test_owed_miner_is_weighted_up_without_diluting_others() -> None:
    cands = [Candidate("a", p2tr(1), 1000), Candidate("b", p2tr(2), 1000, owed=50_000)]
    plain = [Candidate("a", p2tr(1), 1000), Candidate("b", p2tr(2), 1000)]
    kw = dict(fee_bps=1000, budget=Budget(10_000), estimated_revenue=10**7)
    f_owed = fit_distribution(1, POOL, cands, **kw)  # type: ignore[arg-type]
    f_plain = fit_distribution(1, POOL, plain, **kw)  # type: ignore[arg-type]
    assert f_owed.accounts[0] == "b"  # owed miners first
    assert f_owed.distribution.total_weight == f_plain.distribution.total_weight
    s_owed = settle_block(f_owed, 10**7, balances={"b": 50_000})
    s_plain = settle_block(f_plain, 10**7)
    assert s_owed.paid["a"] == s_plain.paid["a"]  # a is not diluted
    assert s_owed.paid["b"] - s_plain.paid["b"] == 50_000 + s_owed.bonus
    assert s_owed.repaid == 50_000


def test_ledger_is_atomic_and_exports_json() -> None:
    ledger = OwedLedger()
    ledger.apply([LedgerEntry("a", 500, "dropped", "blk1")])
    with pytest.raises(ValidationError):
        ledger.apply([LedgerEntry("b", 10, "dropped"), LedgerEntry("a", -501, "repaid")])
    assert ledger.balances() == {"a": 500}
    doc = json.loads(json.dumps(ledger.to_json()))
    assert doc["total_owed"] == 500
    assert OwedLedger.from_json(doc).balances() == {"a": 500}


@st.composite
def block_sequences(draw: st.DrawFn) -> list[tuple[list[Candidate], int, Budget, int]]:
    n_miners = draw(st.integers(1, 25))
    kinds = draw(st.lists(st.sampled_from(["tr", "pkh"]), min_size=n_miners, max_size=n_miners))
    scripts = [p2tr(i) if k == "tr" else p2pkh(i) for i, k in enumerate(kinds)]
    blocks = []
    for _ in range(draw(st.integers(1, 6))):
        ws = draw(st.lists(st.integers(0, 10**12), min_size=n_miners, max_size=n_miners))
        revenue = draw(st.integers(1, 10**9))
        budget = Budget(draw(st.integers(31, 1500)), draw(st.integers(0, 40)))
        fee = draw(st.integers(0, 5000))
        blocks.append(([Candidate(f"m{i}", scripts[i], w) for i, w in enumerate(ws)],
                       revenue, budget, fee))
    return blocks


@settings(max_examples=200, deadline=None)
@given(block_sequences())
def test_conservation_for_every_block_and_across_blocks(
    blocks: list[tuple[list[Candidate], int, Budget, int]],
) -> None:
    ledger = OwedLedger()
    fair_total: dict[str, int] = {}
    paid_total: dict[str, int] = {}
    bonus_total = 0
    for height, (cands, revenue, budget, fee) in enumerate(blocks):
        cands = [Candidate(c.account, c.script, c.weight, ledger.balance(c.account))
                 for c in cands]
        try:
            f = fit_distribution(height + 1, POOL, cands, fee_bps=fee, budget=budget,
                                 estimated_revenue=revenue)
        except (BudgetTooSmallError, ZeroWeightError):
            continue
        s = settle_block(f, revenue, ref=str(height), balances=ledger.balances())
        # invariant 2 for this block
        assert sum(s.paid.values()) + s.pool_keeps + s.credited - s.repaid == revenue
        assert s.result.total == revenue
        ledger.apply(s.entries)
        for account, amount in s.fair.items():
            fair_total[account] = fair_total.get(account, 0) + amount
        for account, amount in s.paid.items():
            paid_total[account] = paid_total.get(account, 0) + amount
        bonus_total += s.bonus
        assert f.distribution.max_outputs_size() <= budget.max_bytes
        scripts = [f.distribution.pool_payout.script, *(p.script for p in f.distribution.payouts)]
        assert sum(sigop_cost(x) for x in scripts) <= budget.max_sigops
    # across blocks: each miner's fair earnings are paid or still owed; nothing is dropped
    for account, fair in fair_total.items():
        assert paid_total.get(account, 0) + ledger.balance(account) >= fair
    assert sum(paid_total.values()) + ledger.total() == sum(fair_total.values()) + bonus_total
    assert all(b >= 0 for b in ledger.balances().values())


def test_value_weighted_window_weights_are_scaled_to_the_u64_wire_field() -> None:
    # Mainnet-sized value weights (difficulty x revenue summed over a window) exceed 2^64;
    # SetPayoutDistribution carries each weight in a TxOut's 8-byte amount.
    huge = [Candidate(f"m{i}", p2tr(i), (i + 1) * 2**90 + 12345) for i in range(50)]
    huge.append(Candidate("tiny", p2tr(99), 3))  # must not vanish to weight 0
    f = fit_distribution(1, POOL, huge, fee_bps=9_999, budget=Budget(10_000),
                         estimated_revenue=10**8)
    weights = [f.distribution.pool_payout.weight, *(p.weight for p in f.distribution.payouts)]
    assert max(weights) < 2**64
    assert all(c.weight >= 1 for c in f.dropped)
    # proportions survive the scaling: m49 earns 50x m0 up to rounding of the shift
    f = fit_distribution(1, POOL, huge, fee_bps=200, budget=Budget(10_000),
                         estimated_revenue=10**8)
    by = {p.account: p.weight for p in f.distribution.payouts}
    assert abs(by["m49"] / by["m0"] - 50) < 1e-9
