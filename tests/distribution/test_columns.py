"""The columnar fitting and amounts equal the per-object reference (tests/distribution/reference.py)
exactly: outputs, order, pruning, boosts, dropped lists and errors, over random inputs."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from payouts.distribution.amounts import PayoutResult, compute_outputs
from payouts.distribution.columns import exact_sum, floor_mul_div, raw_field
from payouts.distribution.fitting import (
    Budget,
    Candidate,
    CandidateColumns,
    FittedDistribution,
    fit_distribution,
    weight_shift,
)
from payouts.distribution.model import (
    U64_MAX,
    AdditionalOutput,
    Distribution,
    Payee,
    PayeeColumns,
    PoolPayout,
)
from payouts.errors import PayoutsError
from payouts.tx.output_scripts import dust_limit, output_costs, output_size, sigop_cost
from payouts.tx.txout import MAX_MONEY
from tests.distribution.reference import reference_fit, reference_outputs

POOL = bytes.fromhex("0014") + b"\xaa" * 20


def _templates(i: int) -> list[bytes]:
    body20, body32 = i.to_bytes(20, "big"), i.to_bytes(32, "big")
    return [
        b"\x00\x14" + body20,  # P2WPKH
        b"\x51\x20" + body32,  # P2TR
        b"\x00\x20" + body32,  # P2WSH
        b"\x76\xa9\x14" + body20 + b"\x88\xac",  # P2PKH
        b"\xa9\x14" + body20 + b"\x87",  # P2SH
        b"\x76\xa9\x14" + body20 + b"\x88\xad",  # P2PKH but CHECKSIGVERIFY: not the template
        b"\xa9\x14" + body20 + b"\x88",  # P2SH-shaped, wrong last byte
        b"\x52\x20" + body32,  # witness v2
        b"\x51\x02\x4e\x73",  # P2A
        b"\x6a\x04" + body20[:4],  # OP_RETURN
        b"\x51\x21" + bytes(33) + b"\x51\xae",  # bare 1-of-1 multisig: 80 sigops
        b"\xac" * (i % 5 + 1),  # bare CHECKSIGs: 4 sigops each
        b"\x00" * 300,  # long enough for a 3-byte CompactSize
        b"",
    ]


scripts = st.builds(lambda i, k: _templates(i)[k], st.integers(0, 2**20),
                    st.integers(0, len(_templates(0)) - 1))
# small values collide (ties in the ranking); large ones force the U64 scaling shift
small_weights = st.one_of(st.just(0), st.integers(1, 5), st.integers(0, 10**12))
any_weights = st.one_of(small_weights, st.integers(2**60, 2**100))
owed_values = st.one_of(st.just(0), st.just(0), st.integers(1, 3),
                        st.integers(0, 10**9), st.just(MAX_MONEY))


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[Candidate]:
    n = draw(st.integers(0, 40))
    # unique names in a random order (the ranking breaks ties by name), now and then a repeat
    accounts = draw(st.permutations([f"m{i}" for i in range(n)]))
    if n > 1 and draw(st.integers(0, 9)) == 5:
        accounts[draw(st.integers(1, n - 1))] = accounts[0]
    weights = draw(st.sampled_from([small_weights, any_weights]))
    cands = [Candidate(a, draw(scripts), draw(weights), draw(owed_values)) for a in accounts]
    if cands and draw(st.integers(0, 20)) == 10:  # now and then a bad row
        i = draw(st.integers(0, len(cands) - 1))
        bad = draw(st.sampled_from(["weight", "owed", "too-much"]))
        value = {"weight": -1, "owed": -5, "too-much": MAX_MONEY + 1}[bad]
        field = "weight" if bad == "weight" else "owed"
        cands[i] = dataclasses.replace(cands[i], **{field: value})
    return cands


def rarely(common: st.SearchStrategy[int], rare: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    """``rare`` about one time in twenty (hypothesis favours the ends of a range, so the rare
    case sits in its middle): invalid values must not crowd out the fitted cases."""
    return st.integers(0, 19).flatmap(lambda k: rare if k == 10 else common)


extras = st.one_of(st.just([]), st.lists(st.builds(
    AdditionalOutput, scripts, rarely(st.integers(0, 10**6), st.just(-1))), max_size=3))
revenues = rarely(st.one_of(st.integers(1, 10**9), st.integers(MAX_MONEY - 10, 2**70)),
                  st.integers(-5, 0))
budgets = st.builds(Budget, st.one_of(st.integers(0, 2500), st.integers(100, 2500)),
                    st.one_of(st.integers(0, 200), st.integers(8, 200)))
fees = rarely(st.one_of(st.integers(0, 9_999), st.sampled_from([0, 200, 9_999])),
              st.just(10_000))
ids = rarely(st.sampled_from([0, 1, U64_MAX]), st.just(U64_MAX + 1))


def _outcome(fn: object, *args: object, **kwargs: object) -> object:
    try:
        return fn(*args, **kwargs)  # type: ignore[operator]
    except PayoutsError as e:
        return (type(e), e.code, e.message)


def _fitted_view(f: object) -> object:
    """Everything a fitted distribution tells, including the fields that ``==`` skips."""
    if not isinstance(f, FittedDistribution):
        return f
    d = f.distribution
    return (d, [p.account for p in d.payouts], f.earned, f.owed, f.dropped, f.fee_weight,
            f.accounts)


def _result_view(r: object) -> object:
    if not isinstance(r, PayoutResult):
        return r
    return (r.outputs, r.pool_amount, r.payee_amounts, r.pruned, r.distributable, r.total)


@settings(max_examples=400, deadline=None)
@given(candidate_lists(), revenues, budgets, fees, extras, ids,
       st.sampled_from([POOL, POOL, POOL, _templates(7)[3], _templates(1)[10]]))
@example([Candidate("a", _templates(1)[1], 2**90, 10**9)], 10**8, Budget(1000, 40), 9_999, [],
         1, POOL)
def test_fit_and_amounts_equal_the_reference(
    cands: list[Candidate], revenue: int, budget: Budget, fee: int,
    additional: list[AdditionalOutput], dist_id: int, pool: bytes,
) -> None:
    kw = dict(fee_bps=fee, budget=budget, estimated_revenue=revenue,
              additional_outputs=additional)
    fast = _outcome(fit_distribution, dist_id, pool, cands, **kw)
    ref = _outcome(reference_fit, dist_id, pool, cands, **kw)
    assert _fitted_view(fast) == _fitted_view(ref)
    as_columns = _outcome(fit_distribution, dist_id, pool, CandidateColumns.of(cands), **kw)
    assert _fitted_view(as_columns) == _fitted_view(ref)
    if not isinstance(fast, FittedDistribution):
        event(f"rejected: {fast[1]}")  # type: ignore[index]
        return
    shifted = weight_shift(sum(c.weight for c in cands)) > 0
    event(f"fitted: {min(len(fast.distribution.payouts), 3)}+ payees, "
          f"{min(len(fast.dropped), 3)}+ dropped, scaled {shifted}")
    assert isinstance(ref, FittedDistribution)
    for t in (revenue, 1, 546, 10**8 + 7, MAX_MONEY, MAX_MONEY + 1):
        want = _result_view(_outcome(reference_outputs, ref.distribution, t))
        assert _result_view(_outcome(compute_outputs, fast.distribution, t)) == want
        # a distribution built from Payee objects (JSON, the store) takes the same path
        assert _result_view(_outcome(compute_outputs, ref.distribution, t)) == want


@st.composite
def distributions(draw: st.DrawFn) -> Distribution:
    big = draw(st.booleans())  # W above 2^63: the exact Python-int path of floor_mul_div
    w = st.integers(1, U64_MAX) if big else st.integers(1, 2**40)
    payees = draw(st.lists(st.builds(Payee, scripts, w, st.integers(0, 5_000)), max_size=30))
    return Distribution(draw(st.integers(0, 9)), PoolPayout(draw(scripts), draw(w)),
                        tuple(payees), tuple(draw(st.lists(
                            st.builds(AdditionalOutput, scripts, st.integers(0, 10**4)),
                            max_size=3))))


@settings(max_examples=300, deadline=None)
@given(distributions(), st.integers(-1, MAX_MONEY + 1))
def test_amounts_equal_the_reference(d: Distribution, revenue: int) -> None:
    want = _result_view(_outcome(reference_outputs, d, revenue))
    assert _result_view(_outcome(compute_outputs, d, revenue)) == want
    # the columns kept on the distribution give the same result the second time
    assert _result_view(_outcome(compute_outputs, d, revenue)) == want


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_floor_mul_div_is_exact(data: st.DataObject) -> None:
    den = data.draw(st.one_of(st.integers(1, 2**64), st.sampled_from([1, 2**63 - 1, 2**63])))
    num = data.draw(st.one_of(st.integers(0, 2**64), st.sampled_from([0, 2**63 - 1, den - 1])))
    assume(num >= 0)
    edge = st.sampled_from([0, 1, min(den, U64_MAX), min(den, U64_MAX) - 1, 2**32, 2**32 - 1])
    ws = data.draw(st.lists(st.one_of(st.integers(0, min(den, U64_MAX)), edge), max_size=20))
    got = floor_mul_div(np.array(ws, dtype=np.uint64), num, den)
    assert [int(x) for x in got] == [w * num // den for w in ws]
    assert exact_sum(np.array(ws, dtype=np.uint64)) == sum(ws)


@settings(max_examples=200, deadline=None)
@given(st.lists(scripts, max_size=30))
def test_output_costs_match_the_per_script_rules(xs: list[bytes]) -> None:
    sizes, sigops, dusts = output_costs(xs)
    assert sizes.tolist() == [output_size(s) for s in xs]
    assert sigops.tolist() == [sigop_cost(s) for s in xs]
    assert dusts.tolist() == [dust_limit(s) for s in xs]


def _p2tr(i: int) -> bytes:
    return b"\x51\x20" + i.to_bytes(32, "big")


def test_columnar_distribution_behaves_like_the_object_one() -> None:
    cands = [Candidate(f"m{i}", _p2tr(i), 10**6 + i, 5_000 if i == 3 else 0) for i in range(50)]
    kw = dict(fee_bps=200, budget=Budget(10_000), estimated_revenue=10**8)
    fast = fit_distribution(1, POOL, cands, **kw)  # type: ignore[arg-type]
    ref = reference_fit(1, POOL, cands, **kw)  # type: ignore[arg-type]
    # nothing is built until read, and reading gives real tuples of real objects
    assert isinstance(raw_field(fast.distribution, "payouts"), PayeeColumns)
    assert type(fast.distribution.payouts) is tuple
    assert fast.distribution == ref.distribution and hash(fast.distribution) == hash(
        ref.distribution)
    assert repr(fast) == repr(ref)
    assert pickle.loads(pickle.dumps(fast)) == ref
    moved = dataclasses.replace(fast.distribution, distribution_id=2)
    assert moved.payouts == ref.distribution.payouts and moved.distribution_id == 2
    assert fast.distribution.max_outputs_size() == ref.distribution.max_outputs_size()
    assert fast.distribution.total_weight == ref.distribution.total_weight
    r = compute_outputs(fast.distribution, 10**8)
    assert type(r.outputs) is tuple and r == reference_outputs(ref.distribution, 10**8)


def test_bad_columns_are_rejected_like_bad_objects() -> None:
    with pytest.raises(PayoutsError, match="different lengths"):
        CandidateColumns(["a"], [], [1], [0])
    good = PayeeColumns([_p2tr(1), _p2tr(2)], np.array([5, 0]), np.array([330, 330]))
    with pytest.raises(PayoutsError, match="payout 1 has weight 0"):
        Distribution.from_columns(1, PoolPayout(POOL, 1), good)
    big = PayeeColumns([_p2tr(1)], np.array([U64_MAX + 1], dtype=object), np.array([330]))
    with pytest.raises(PayoutsError, match="payout 0 weight does not fit"):
        Distribution.from_columns(1, PoolPayout(POOL, 1), big)
    dust = PayeeColumns([_p2tr(1)], np.array([1]), np.array([2**32]))
    with pytest.raises(PayoutsError, match="payout 0 dust limit"):
        Distribution.from_columns(1, PoolPayout(POOL, 1), dust)
