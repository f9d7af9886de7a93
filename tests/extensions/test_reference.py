"""An implementation written from docs/extensions/0x4003-settlement-modes.md alone
(:mod:`tests.extensions.reference`) against the vectors file and against the code, on random
inputs: if the document left a rule out, the two would disagree somewhere."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payouts.distribution.jsonio import distribution_from_json
from payouts.errors import ValidationError
from sv2.domain_messages import mode_from_message
from sv2.messages import SetSettlementMode
from sv2.settlement_vectors.build import ctv_result, musig2_result
from sv2.settlement_vectors.cases import committee, message
from sv2.settlement_vectors.keys import bare_multisig, p2pkh, p2sh, p2tr, p2wpkh, xonly
from tests.extensions.reference import ctv_outputs, musig2_outputs
from tests.extensions.vectors import cases, distribution, mode_fields

REFERENCE = {"ctv": ctv_outputs, "musig2": musig2_outputs}
CODE = {"ctv": ctv_result, "musig2": musig2_result}


def _expected(case: dict[str, Any]) -> dict[str, Any]:
    return case["result"] if "result" in case else {"error": case["error"]}


@pytest.mark.parametrize(
    ("mode", "case"),
    [(m, c) for m in ("ctv", "musig2") for c in cases(m)],
    ids=[f"{m}-{c['name']}" for m in ("ctv", "musig2") for c in cases(m)],
)
def test_reference_reproduces_every_vector(mode: str, case: dict[str, Any]) -> None:
    got = REFERENCE[mode](distribution(case["distribution"]), case["revenue"], mode_fields(case))
    assert got == _expected(case)


def _code(mode: str, dist: dict[str, Any], revenue: int, fields: dict[str, Any]) -> Any:
    msg = SetSettlementMode.from_json_fields(fields)
    try:
        return CODE[mode](distribution_from_json(dist), revenue, mode_from_message(msg))
    except ValidationError as exc:
        return {"error": exc.code}


# -- random inputs ----------------------------------------------------------------------------

SCRIPTS = [p2tr, p2wpkh, p2sh, p2pkh]


@st.composite
def distributions(draw: st.DrawFn, max_payees: int = 60) -> dict[str, Any]:
    n = draw(st.one_of(st.integers(0, 8), st.integers(0, max_payees), st.just(max_payees)))
    payees = []
    for i in range(n):
        kind = draw(st.sampled_from(SCRIPTS))
        script = kind(1000 + i)
        if draw(st.integers(1, 300)) == 137:
            script = bare_multisig(1000 + i)  # sigop-dense, rare
        payees.append(
            {
                "script": script.hex(),
                "weight": draw(st.integers(1, 10**6)),
                "dust_limit": draw(st.sampled_from([0, 1, 294, 546, 2_000, 50_000])),
            }
        )
    extras = [
        {"script": p2wpkh(900 + j).hex(), "amount": draw(st.integers(0, 30_000))}
        for j in range(draw(st.integers(0, 2)))
    ]
    return {
        "distribution_id": 5,
        "pool_payout": {
            "script": draw(st.sampled_from(SCRIPTS))(999).hex(),
            "weight": draw(st.integers(1, 10**7)),
        },
        "payouts": payees,
        "additional_outputs": extras,
    }


REVENUES = st.one_of(
    st.integers(1, 100_000), st.integers(100_000, 10**7), st.integers(10**7, 5 * 10**9)
)


@st.composite
def ctv_fields(draw: st.DrawFn) -> dict[str, Any]:
    fee = draw(st.sampled_from([0, 0, 1, 2, 7, 25]))
    return message(
        5,
        1,
        ctv_arity=draw(st.one_of(st.sampled_from([0, 0, 2, 3, 4, 16, 0xFFFF]),
                                 st.integers(2, 70))),
        ctv_output_form=draw(st.sampled_from([0, 1])),
        ctv_anchor=True if fee == 0 else draw(st.booleans()),
        ctv_fee_rate=fee,
        ctv_tx_version=draw(st.sampled_from([0, 3] if fee == 0 else [0, 2, 3])),
        ctv_sequence=draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0, 10])),
        ctv_locktime=draw(st.sampled_from([0, 100, 800_000])),
    ).fields_to_json()


@st.composite
def musig2_fields(draw: st.DrawFn) -> dict[str, Any]:
    secrets = draw(st.sets(st.integers(1, 12), min_size=1, max_size=5))
    return message(
        5,
        2,
        musig2_committee=committee(*secrets),
        musig2_fallback_timelock=draw(st.sampled_from([101, 127, 128, 244, 32_767, 32_768,
                                                       65_535])),
        musig2_fallback_key=xonly(draw(st.integers(20, 30))),
        musig2_fee_rate=draw(st.sampled_from([1, 2, 5, 40])),
        musig2_ctv_leaf=draw(st.booleans()),
    ).fields_to_json()


RANDOM = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RANDOM
@given(distributions(), REVENUES, ctv_fields())
def test_ctv_code_equals_reference(dist: dict[str, Any], revenue: int, f: dict[str, Any]) -> None:
    assert _code("ctv", dist, revenue, f) == ctv_outputs(dist, revenue, f)


@RANDOM
@given(distributions(), REVENUES, musig2_fields())
def test_musig2_code_equals_reference(
    dist: dict[str, Any], revenue: int, f: dict[str, Any]
) -> None:
    assert _code("musig2", dist, revenue, f) == musig2_outputs(dist, revenue, f)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distributions(max_payees=330), st.integers(10**7, 5 * 10**9), ctv_fields())
def test_ctv_code_equals_reference_around_the_truc_size(
    dist: dict[str, Any], revenue: int, f: dict[str, Any]
) -> None:
    """Up to 330 payees: flat txs on both sides of 10,000 vB, automatic arity and version."""
    assert _code("ctv", dist, revenue, f) == ctv_outputs(dist, revenue, f)
