"""The PR #203 payout math: worked examples, spec rules and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.distribution import (
    AdditionalOutput,
    Distribution,
    Payee,
    PoolPayout,
    compute_outputs,
)
from payouts.errors import (
    UnsatisfiableDistributionError,
    ValidationError,
    ZeroRevenueError,
    ZeroWeightError,
)
from payouts.tx.output_scripts import ScriptType, classify, dust_limit, sigop_cost

P2WPKH = bytes.fromhex("0014") + bytes(range(20))
P2TR = bytes.fromhex("5120") + bytes(range(32))
P2PKH = bytes.fromhex("76a914") + bytes(20) + bytes.fromhex("88ac")
P2SH = bytes.fromhex("a914") + bytes(20) + bytes.fromhex("87")
P2WSH = bytes.fromhex("0020") + bytes(32)
OP_RETURN = bytes.fromhex("6a04deadbeef")


def test_worked_example_by_hand() -> None:
    # W = 10 + 30 + 60 = 100, T = 1_000_000: 300_000 and 600_000 exactly, pool 100_000.
    d = Distribution(1, PoolPayout(P2WPKH, 10), (Payee(P2TR, 30, 330), Payee(P2PKH, 60, 546)))
    r = compute_outputs(d, 1_000_000)
    assert [(o.value, o.script) for o in r.outputs] == [
        (100_000, P2WPKH), (300_000, P2TR), (600_000, P2PKH)
    ]


def test_rounding_goes_to_pool_and_floor_is_exact() -> None:
    d = Distribution(1, PoolPayout(P2WPKH, 1), (Payee(P2TR, 1, 0), Payee(P2TR, 1, 0)))
    r = compute_outputs(d, 1000)  # 1000/3 = 333.33 -> 333 each, pool 334
    assert [o.value for o in r.outputs] == [334, 333, 333]


def test_dust_is_pruned_into_pool_and_order_kept() -> None:
    payees = (Payee(P2TR, 500, 330), Payee(P2PKH, 1, 546), Payee(P2WPKH, 499, 294))
    d = Distribution(7, PoolPayout(P2WPKH, 1000), payees)
    r = compute_outputs(d, 400_000)
    # W = 2000: 100_000, 200 (< 546, pruned), 99_800; pool = 400_000 - 199_800
    assert r.pruned == (1,)
    assert r.payee_amounts == (100_000, 0, 99_800)
    assert [o.value for o in r.outputs] == [200_200, 100_000, 99_800]
    assert [o.script for o in r.outputs] == [P2WPKH, P2TR, P2WPKH]


def test_additional_outputs_paid_first_then_weights_split_the_rest() -> None:
    extra = (AdditionalOutput(OP_RETURN, 0), AdditionalOutput(P2WSH, 10_000))
    d = Distribution(1, PoolPayout(P2WPKH, 1), (Payee(P2TR, 3, 330),), extra)
    r = compute_outputs(d, 110_000)
    assert r.distributable == 100_000
    assert [o.value for o in r.outputs] == [25_000, 75_000, 0, 10_000]
    assert r.outputs[-1].script == P2WSH


def test_zero_revenue_rejected() -> None:
    d = Distribution(1, PoolPayout(P2WPKH, 1))
    with pytest.raises(ZeroRevenueError):
        compute_outputs(d, 0)


def test_weights_summing_to_zero_rejected() -> None:
    with pytest.raises(ZeroWeightError):
        Distribution(1, PoolPayout(P2WPKH, 0))
    with pytest.raises(ZeroWeightError):
        Distribution(1, PoolPayout(P2WPKH, 1), (Payee(P2TR, 0, 330),))


def test_additional_outputs_over_revenue_rejected() -> None:
    d = Distribution(1, PoolPayout(P2WPKH, 1), (), (AdditionalOutput(P2WSH, 5000),))
    with pytest.raises(ValidationError, match="exceed the template revenue"):
        compute_outputs(d, 4999)


@pytest.mark.parametrize("revenue", [4999, 5000])
def test_fixed_outputs_reaching_revenue_are_unsatisfiable(revenue: int) -> None:
    """PR #203 (2026-09): F >= T is unsatisfiable, F == T included (no 0-sat pool output)."""
    d = Distribution(1, PoolPayout(P2WPKH, 1), (Payee(P2TR, 5, 330),),
                     (AdditionalOutput(P2WSH, 5000),))
    with pytest.raises(UnsatisfiableDistributionError, match="F >= T") as e:
        compute_outputs(d, revenue)
    assert e.value.code == "unsatisfiable-distribution"
    assert compute_outputs(d, 5001).pool_amount + 5000 + sum(
        compute_outputs(d, 5001).payee_amounts) == 5001


def test_dust_limits_and_sigops_by_script_type() -> None:
    expected = {P2PKH: 546, P2SH: 540, P2WPKH: 294, P2WSH: 330, P2TR: 330, OP_RETURN: 0}
    assert {s: dust_limit(s) for s in expected} == expected
    assert dust_limit(bytes.fromhex("51024e73")) == 240  # P2A anchor
    assert classify(P2TR) is ScriptType.P2TR and classify(P2PKH) is ScriptType.P2PKH
    assert sigop_cost(P2PKH) == 4 and sigop_cost(P2WPKH) == 0 and sigop_cost(P2TR) == 0
    assert sigop_cost(bytes.fromhex("5121") + bytes(33) + bytes.fromhex("51ae")) == 80


scripts = st.sampled_from([P2WPKH, P2TR, P2PKH, P2SH, P2WSH])
weights = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def distributions(draw: st.DrawFn) -> Distribution:
    payees = draw(
        st.lists(
            st.builds(Payee, scripts, weights, st.integers(0, 100_000)), max_size=30
        )
    )
    extras = draw(st.lists(st.builds(AdditionalOutput, scripts, st.integers(0, 10_000)),
                           max_size=3))
    return Distribution(draw(st.integers(0, 2**64 - 1)), PoolPayout(draw(scripts), draw(weights)),
                        tuple(payees), tuple(extras))


@settings(max_examples=300, deadline=None)
@given(distributions(), st.integers(min_value=30_001, max_value=21_000_000 * 10**8))
def test_properties_of_the_math(d: Distribution, revenue: int) -> None:
    r = compute_outputs(d, revenue)
    assert r.total == revenue  # nothing created, nothing lost
    assert all(o.value >= 0 for o in r.outputs)
    total_weight = d.total_weight
    t_prime = revenue - sum(a.amount for a in d.additional_outputs)
    paid = iter(r.outputs[1 : 1 + len(d.payouts) - len(r.pruned)])
    for i, p in enumerate(d.payouts):
        exact = p.weight * t_prime // total_weight
        if i in r.pruned:
            assert exact < p.dust_limit
        else:
            out = next(paid)
            assert (out.value, out.script) == (exact, p.script)
            assert exact >= p.dust_limit
    assert r.outputs[0].script == d.pool_payout.script
    assert [o.value for o in r.outputs[len(r.outputs) - len(d.additional_outputs):]] == [
        a.amount for a in d.additional_outputs
    ] or not d.additional_outputs
