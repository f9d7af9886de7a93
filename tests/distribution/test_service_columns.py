"""The service's column readers (issue #2) against the per-object code they replaced.

``fitted_to_json`` / ``fitted_from_json`` (payouts/service.py) and ``settle_block`` read the
distribution's columns instead of every Payee/Candidate object. The per-object implementations
are kept below as the reference: stored distributions must serialize byte for byte the same and
load unchanged, and a block must settle to the same entries, dicts (with key order) and totals.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.distribution.columns import raw_field
from payouts.distribution.fitting import (
    Budget,
    Candidate,
    CandidateColumns,
    FittedDistribution,
    fit_distribution,
)
from payouts.distribution.model import Distribution, Payee, PoolPayout
from payouts.distribution.settle import BlockSettlement, settle_block
from payouts.distribution.stored import fitted_from_json, fitted_to_json
from payouts.errors import PayoutsError
from tests.distribution.service_reference import (
    old_fitted_from_json,
    old_fitted_to_json,
    old_settle_block,
)

POOL = bytes.fromhex("0014") + b"\x07" * 20


def _script(i: int, kind: int) -> bytes:
    if kind == 0:
        return b"\x51\x20" + i.to_bytes(32, "big")  # P2TR
    if kind == 1:
        return b"\x76\xa9\x14" + i.to_bytes(20, "big") + b"\x88\xac"  # P2PKH (sigops)
    return b"\x00\x14" + i.to_bytes(20, "big")  # P2WPKH


# -- comparisons ------------------------------------------------------------------------------

def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body)


def assert_same_fitted(got: FittedDistribution, want: FittedDistribution) -> None:
    assert got == want
    # Payee.account is compare=False: check it (and the derived ledger keys) explicitly
    assert [p.account for p in got.distribution.payouts] == [
        p.account for p in want.distribution.payouts]
    assert got.accounts == want.accounts
    assert _dump(fitted_to_json(got)) == _dump(old_fitted_to_json(want))


def assert_same_settlement(got: BlockSettlement, want: BlockSettlement) -> None:
    assert got == want
    assert list(got.paid.items()) == list(want.paid.items())
    assert list(got.fair.items()) == list(want.fair.items())


def _fit(cands: list[Candidate], budget: Budget, fee: int, revenue: int,
         columns: bool) -> FittedDistribution:
    source = CandidateColumns.of(cands) if columns else cands
    return fit_distribution(9, POOL, source, fee_bps=fee, budget=budget,
                            estimated_revenue=revenue)


@st.composite
def fits(draw: st.DrawFn) -> tuple[list[Candidate], Budget, int, int]:
    n = draw(st.integers(0, 30))
    weights = st.one_of(st.just(0), st.integers(1, 10**6), st.integers(0, 10**12),
                        st.integers(2**60, 2**100))
    cands = [
        Candidate(draw(st.sampled_from([f"m{i}", f"miner-{i}"])),
                  _script(i, draw(st.integers(0, 2))), draw(weights),
                  draw(st.one_of(st.just(0), st.integers(0, 10**8))))
        for i in range(n)
    ]
    budget = Budget(draw(st.integers(31, 1600)), draw(st.integers(0, 60)))
    return cands, budget, draw(st.integers(0, 5000)), draw(st.integers(1, 10**9))


@settings(max_examples=300, deadline=None)
@given(fits(), st.integers(1, 21 * 10**14), st.data())
def test_json_and_settlement_equal_the_per_object_code(
    case: tuple[list[Candidate], Budget, int, int], revenue: int, data: st.DataObject,
) -> None:
    cands, budget, fee, estimated = case
    try:
        fresh = _fit(cands, budget, fee, estimated, columns=True)
    except PayoutsError:
        return  # no distribution to store (the fit's own tests cover its errors)
    # balances now: some miners owed (or, against a corrupt ledger, owing), some absent
    balances = {c.account: data.draw(st.integers(-10**6, 10**8)) for c in cands
                if data.draw(st.booleans())}

    # writing: from the fit's columns, byte-identical to writing the objects
    body = fitted_to_json(fresh)
    # the writer read columns: no Payee or dropped Candidate tuple was built
    assert raw_field(fresh.distribution, "payouts")._value is None
    assert raw_field(fresh, "dropped")._value is None
    object_fit = _fit(cands, budget, fee, estimated, columns=False)
    assert _dump(body) == _dump(old_fitted_to_json(object_fit))
    stored = json.loads(_dump(body))  # what the store gives back

    # reading: equal to the per-object reader, and it writes back to the same bytes
    loaded = fitted_from_json(stored)
    assert_same_fitted(loaded, old_fitted_from_json(stored))

    # settling: the fit's columns, the loaded columns and plain objects all agree
    for bal in (None, balances):
        want = old_settle_block(old_fitted_from_json(stored), revenue, "r", bal)
        for fitted in (_fit(cands, budget, fee, estimated, columns=True),
                       fitted_from_json(stored), old_fitted_from_json(stored)):
            assert_same_settlement(settle_block(fitted, revenue, "r", bal), want)


def test_hand_made_distribution_without_accounts_settles_like_before() -> None:
    """Payees with no account (ledger key = script hex), an empty one, and weights the fitter
    never produces (negative earned, earned above W) take the same path as before."""
    payees = (Payee(_script(1, 0), 5_000, 330), Payee(_script(2, 2), 7, 294, ""),
              Payee(_script(3, 1), 2**63 + 5, 546, "c"))
    dist = Distribution(4, PoolPayout(POOL, 2**62), payees)
    fitted = FittedDistribution(dist, (6_000, -3, 2**64 + 1), (10, 0, -4),
                                (Candidate("d", _script(4, 0), 2**70, 3),), 11)
    for bal in (None, {"c": 50, _script(1, 0).hex(): 10**9}):
        for revenue in (1, 10**6, 21 * 10**14):
            assert_same_settlement(settle_block(fitted, revenue, "x", bal),
                                   old_settle_block(fitted, revenue, "x", bal))
    assert _dump(fitted_to_json(fitted)) == _dump(old_fitted_to_json(fitted))
    stored = json.loads(_dump(fitted_to_json(fitted)))
    assert_same_fitted(fitted_from_json(stored), old_fitted_from_json(stored))


def _good_body() -> dict[str, Any]:
    cands = [Candidate(f"m{i}", _script(i, i % 3), 10**6 * (i + 1), 500 * (i % 2))
             for i in range(12)]
    fitted = _fit(cands, Budget(300, 12), 200, 10**8, columns=True)
    assert fitted.distribution.payouts and fitted.dropped  # both kinds of row present
    return json.loads(_dump(fitted_to_json(fitted)))


def _corrupt(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    body = _good_body()
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(("path", "value"), [
    (("payouts", 0, "weight"), "x"),
    (("payouts", 0, "weight"), "-1"),
    (("payouts", 1, "weight"), "0"),
    (("payouts", 0, "weight"), str(2**64)),
    (("payouts", 0, "dust_limit"), True),
    (("payouts", 0, "dust_limit"), -1),
    (("payouts", 0, "dust_limit"), _DELETE),
    (("payouts", 0, "script"), "zz"),
    (("payouts", 0, "script"), 5),
    (("payouts", 0), "not an object"),
    (("accounts",), ["only-one"]),
    (("pool_payout", "weight"), "0"),
    (("distribution_id",), -1),
    (("dropped", "weight", 0), str(2**70)),
    (("dropped", "owed", 0), "y"),
    (("dropped", "account"), []),
    (("dropped", "script"), _DELETE),
    (("earned",), ["1", str(2**80)]),
])
def test_a_corrupt_document_fails_or_loads_exactly_as_before(
    path: tuple[str | int, ...], value: Any,
) -> None:
    body = _corrupt(path, value)
    try:
        want = old_fitted_from_json(body)
    except Exception as e:  # the old reader's error must be raised again, unchanged
        with pytest.raises(type(e)) as got:
            fitted_from_json(body)
        assert str(got.value) == str(e)
        return
    assert_same_fitted(fitted_from_json(body), want)


def test_documents_stored_with_a_list_of_dropped_objects_are_still_read() -> None:
    """The form stored before the dropped candidates became columns (issue #11)."""
    new = _good_body()
    cols = new["dropped"]
    old = dict(new, dropped=[{"account": a, "script": s, "weight": w, "owed": o}
                             for a, s, w, o in zip(cols["account"], cols["script"],
                                                   cols["weight"], cols["owed"], strict=True)])
    assert len(old["dropped"]) > 0
    assert _dump(fitted_to_json(fitted_from_json(old))) == _dump(new)
    assert_same_fitted(fitted_from_json(old), fitted_from_json(new))
    assert_same_fitted(fitted_from_json(old), old_fitted_from_json(old))
