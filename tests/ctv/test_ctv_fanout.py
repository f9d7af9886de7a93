"""The ctv settlement builder: shape, amounts, conservation, commitments, determinism, refusal."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from payouts.distribution.amounts import compute_outputs
from payouts.distribution.jsonio import distribution_from_json, distribution_to_json
from payouts.distribution.model import AdditionalOutput, Distribution, Payee, PoolPayout
from payouts.settlement.ctv import (
    DEFAULT_ARITY,
    NUMS_H,
    P2A_SCRIPT,
    CtvFanout,
    CtvNonStandardError,
    CtvNotActiveError,
    CtvParams,
    CtvParamsError,
    CtvRevenueTooSmallError,
    build_ctv_fanout,
    commitment_matches,
    ctv_settlement,
)
from payouts.settlement.ctv_shape import build_shape, choose_arity, shape_overhead, shape_vsizes
from payouts.tx.ctv import parse_ctv_script, standard_template_hash
from payouts.tx.output_scripts import dust_limit, output_size
from payouts.tx.transaction import OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

T = 312_500_000
POOL = PoolPayout(bytes.fromhex("0014" + "11" * 20), 10)
FORMS = ("bare", "taproot")


def p2tr(i: int) -> bytes:
    return b"\x51\x20" + i.to_bytes(32, "big")


def make_dist(n: int, *, extra: bool = True, weight: int = 7) -> Distribution:
    payees = tuple(Payee(p2tr(i + 1), 1 + (i * weight) % 13, 330) for i in range(n))
    extras = (AdditionalOutput(bytes.fromhex("6a04cafebabe"), 0),) if extra else ()
    return Distribution(3, POOL, payees, extras)


def check_fanout(f: CtvFanout, dist: Distribution, revenue: int) -> None:
    """Every structural promise of the builder."""
    fixed = sum(a.amount for a in dist.additional_outputs)
    # coinbase: commitment worth T', then the additional outputs with their amounts
    assert f.coinbase_outputs[0].value == revenue - fixed
    assert f.coinbase_outputs[1:] == tuple(
        TxOut(a.amount, a.script) for a in dist.additional_outputs
    )
    # conservation: leaves + fees + anchors == T'
    leaves = sum(e.output.value for e in f.exits)
    assert leaves + f.fees + f.anchors_total == revenue - fixed
    assert f.payout.pool_amount == f.pool.output.value
    assert f.payout.distributable == leaves
    spent: dict[OutPoint, TxOut] = {f.funding: f.coinbase_outputs[0]}
    for i, t in enumerate(f.txs):
        tx = t.tx
        # parents first; each tx spends the output its parent committed to
        assert len(tx.inputs) == 1 and tx.inputs[0].script_sig == b""
        prev = spent.pop(tx.inputs[0].prevout)
        assert prev.value == t.value == tx.output_value() + t.fee
        assert t.fee == f.fee_rate * tx.vsize
        assert commitment_matches(prev.script, tx)
        assert t.template_hash == standard_template_hash(tx, 0)
        assert (t.parent is None) == (i == 0) and (t.level == 0) == (i == 0)
        if f.anchor_value is not None:
            assert tx.outputs[-1] == TxOut(f.anchor_value, P2A_SCRIPT)
        assert tx.version == f.version and tx.locktime == 0
        if f.version == 3:
            assert tx.vsize <= 10_000
        assert tx.weight <= 400_000
        for n, o in enumerate(tx.outputs):
            spent[OutPoint(tx.txid, n)] = o
    # what is left unspent is exactly the leaves (and anchors)
    anchors = {op for op, o in spent.items() if o.script == P2A_SCRIPT}
    assert len(anchors) == (len(f.txs) if f.anchor_value is not None else 0)
    leaf_outs = {op: o for op, o in spent.items() if op not in anchors}
    assert len(leaf_outs) == len(f.exits)
    for e in f.exits:
        last = f.txs[e.path[-1]].tx
        assert last.outputs[e.vout] == e.output == leaf_outs[OutPoint(last.txid, e.vout)]
        assert e.path[0] == 0
        for a, b in zip(e.path, e.path[1:], strict=False):
            assert f.txs[b].parent == a
    # policy dust: only the anchor may be below its threshold
    for t in f.txs:
        for o in t.tx.outputs:
            assert o.script == P2A_SCRIPT or o.value >= dust_limit(o.script)
    assert f.total_vbytes == sum(t.tx.vsize for t in f.txs)


# -- shape ------------------------------------------------------------------------------------


def test_left_packed_shape() -> None:
    s = build_shape(5, 2)
    # 5 leaves, k=2: root = [subtree of 4, leaf 4]; subtree = [[0,1],[2,3]]
    assert [n.entries for n in s.nodes] == [(~1, 4), (~2, ~3), (0, 1), (2, 3)]
    assert [n.level for n in s.nodes] == [0, 1, 2, 2]
    s = build_shape(17, 16)
    assert s.nodes[0].entries == (~1, 16) and s.nodes[1].entries == tuple(range(16))
    assert build_shape(16, 16).nodes[0].entries == tuple(range(16))
    assert len(build_shape(1000, None).nodes) == 1


@pytest.mark.parametrize("arity", [None, 2, 3, 4, 16, 64])
def test_shape_covers_every_leaf_once_and_is_shallow(arity: int | None) -> None:
    for n in (1, 2, 3, 15, 16, 17, 63, 64, 65, 257, 1000):
        s = build_shape(n, arity)
        pos = s.leaf_positions()
        assert len(set(pos)) == n
        for node in s.nodes:
            if node.parent is not None:
                assert node.parent < node.index  # broadcast order
                assert s.nodes[node.parent].entries[node.parent_vout] == ~node.index
            assert len(node.entries) <= (n if arity is None else arity)
        if arity is not None and n > 1:
            depth = 1
            while arity**depth < n:
                depth += 1
            assert s.depth == depth  # ceil(log_k n): the minimum possible


@pytest.mark.parametrize("anchor", [True, False])
@pytest.mark.parametrize("taproot", [True, False])
@pytest.mark.parametrize("arity", [None, 2, 3, 4, 16])
def test_overhead_formula_matches_nodes_and_never_decreases(
    arity: int | None, taproot: bool, anchor: bool
) -> None:
    """F1 ≤ F0 in the amount rule rests on this: pruning leaves never raises the tree's cost."""
    prev = (0, 0)
    for n in range(1, 700 if arity is not None else 300):
        n_txs, overhead = shape_overhead(n, arity, anchor=anchor, taproot=taproot)
        if n % 37 == 0 or n < 20:
            s = build_shape(n, arity)
            sizes = [43] * n
            assert n_txs == len(s.nodes)
            assert overhead == sum(shape_vsizes(s, sizes, anchor=anchor, taproot=taproot)) - 43 * n
        assert n_txs >= prev[0] and overhead >= prev[1]
        prev = (n_txs, overhead)


# -- building ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("n", "params"),
    [
        (0, CtvParams()),
        (1, CtvParams()),
        (5, CtvParams(arity=2)),
        (40, CtvParams(arity=4, fee_rate=3)),
        (100, CtvParams()),
        (300, CtvParams()),
        (300, CtvParams(fee_rate=1)),
        (120, CtvParams(arity=8, anchor=False, fee_rate=2)),
        (64, CtvParams(arity=64, fee_rate=5, version=2)),
    ],
)
def test_structure_and_conservation(n: int, params: CtvParams, form: str) -> None:
    dist = make_dist(n)
    p = replace(params, form=form)  # type: ignore[arg-type]
    f = build_ctv_fanout(dist, T, p)
    check_fanout(f, dist, T)
    assert f.form == form
    assert len(f.payees) == n  # nobody is pruned at this revenue


def test_auto_arity_flat_while_standard_then_default_tree() -> None:
    small = build_ctv_fanout(make_dist(200), T)
    assert small.arity is None and small.version == 3 and len(small.txs) == 1
    assert small.anchor_value == 0 and small.fees == 0  # ephemeral anchor, 0-fee TRUC
    big = build_ctv_fanout(make_dist(300), T)  # > 10,000 vB flat: 0-fee needs TRUC -> tree
    assert big.arity == DEFAULT_ARITY and big.version == 3 and big.depth == 3
    # with a pre-committed fee a flat non-TRUC tx up to 400,000 WU is standard
    paid = build_ctv_fanout(make_dist(300), T, CtvParams(fee_rate=1))
    assert paid.arity is None and paid.version == 2 and paid.anchor_value == 240
    assert paid.txs[0].tx.vsize > 10_000 and paid.fees == paid.txs[0].tx.vsize
    huge = build_ctv_fanout(make_dist(2400), T, CtvParams(fee_rate=1))  # > 400,000 WU flat
    assert huge.arity == DEFAULT_ARITY and huge.version == 3
    assert build_ctv_fanout(make_dist(300), T, CtvParams(arity=0)).arity == DEFAULT_ARITY


def test_amount_rule_two_passes_pool_absorbs_the_difference() -> None:
    """F0 on all payees, PR #203 math on T − F0, F1 on the kept ones, pool += F0 − F1."""
    # weights such that several payees fall below dust after fees
    payees = tuple(Payee(p2tr(i + 1), 1 if i % 3 else 400, 330) for i in range(60))
    dist = Distribution(1, POOL, payees)
    revenue = 200_000
    p = CtvParams(arity=4, fee_rate=2)
    f = build_ctv_fanout(dist, revenue, p)
    sizes0 = [output_size(POOL.script)] + [output_size(x.script) for x in payees]

    def cost(sizes: list[int]) -> int:
        n_txs, over = shape_overhead(len(sizes), 4, anchor=True, taproot=False)
        return 2 * (sum(sizes) + over) + 240 * n_txs

    f0 = cost(sizes0)
    r = compute_outputs(dist, revenue - f0)
    assert r.pruned and f.payout.pruned == r.pruned
    kept = [i for i in range(60) if i not in r.pruned]
    f1 = cost([sizes0[0], *(sizes0[1 + i] for i in kept)])
    assert f1 < f0
    assert f.pool.output.value == r.pool_amount + f0 - f1
    assert [e.output.value for e in f.payees] == [r.payee_amounts[i] for i in kept]
    assert [e.payee for e in f.payees] == kept
    assert f.tree_cost == f1
    check_fanout(f, dist, revenue)


def test_payee_dust_is_raised_to_relay_dust() -> None:
    # A payee that accepts 1 sat in a coinbase still cannot get a sub-dust fan-out output.
    dist = Distribution(1, POOL, (Payee(p2tr(1), 1, 0), Payee(p2tr(2), 10_000, 0)))
    f = build_ctv_fanout(dist, 1_000_000)  # payee 0: floor(1e6 / 10,011) = 99 < 330
    assert f.payout.pruned == (0,) and [e.payee for e in f.payees] == [1]
    check_fanout(f, dist, 1_000_000)


def test_taproot_form_commits_through_the_nums_leaf() -> None:
    f = build_ctv_fanout(make_dist(20), T, CtvParams(arity=4, form="taproot"))
    for t in f.txs:
        leaf, control = t.tx.inputs[0].witness
        assert parse_ctv_script(leaf) == t.template_hash
        assert control[0] & 0xFE == 0xC0 and control[1:] == NUMS_H and len(control) == 33
        assert t.tx.vsize == (t.tx.weight + 3) // 4 and t.tx.weight % 4 == 0
    assert f.coinbase_outputs[0].script[:2] == b"\x51\x20"


def test_tampered_child_no_longer_matches() -> None:
    for form in FORMS:
        f = build_ctv_fanout(make_dist(20), T, CtvParams(arity=4, form=form))  # type: ignore[arg-type]
        parent, child = f.txs[0], f.txs[1]
        spent = parent.tx.outputs[child.parent_vout]
        assert commitment_matches(spent.script, child.tx)
        outs = list(child.tx.outputs)
        outs[0] = TxOut(outs[0].value - 1, outs[0].script)
        cheat = Tx(child.tx.version, child.tx.inputs, tuple(outs), child.tx.locktime)
        assert not commitment_matches(spent.script, cheat)
        for bad in (
            Tx(2 if child.tx.version == 3 else 3, child.tx.inputs, child.tx.outputs),
            Tx(child.tx.version, child.tx.inputs, child.tx.outputs, 1),
            Tx(child.tx.version, (replace(child.tx.inputs[0], sequence=0),), child.tx.outputs),
            Tx(child.tx.version, child.tx.inputs, child.tx.outputs[::-1]),
        ):
            assert not commitment_matches(spent.script, bad)
        # ...but CTV does not commit to the outpoint: a different prevout still matches
        moved = Tx(
            child.tx.version,
            (
                TxIn(
                    OutPoint(b"\x99" * 32, 7),
                    b"",
                    child.tx.inputs[0].sequence,
                    child.tx.inputs[0].witness,
                ),
            ),
            child.tx.outputs,
        )
        assert commitment_matches(spent.script, moved)


def test_bind_changes_txids_not_commitments() -> None:
    f = build_ctv_fanout(make_dist(50), T, CtvParams(arity=4))
    g = f.bind(OutPoint(b"\x42" * 32, 0))
    assert g.txs[0].tx.inputs[0].prevout == OutPoint(b"\x42" * 32, 0)
    assert [t.template_hash for t in f.txs] == [t.template_hash for t in g.txs]
    assert [t.tx.outputs for t in f.txs] == [t.tx.outputs for t in g.txs]
    assert f.coinbase_outputs == g.coinbase_outputs
    assert all(a.tx.txid != b.tx.txid for a, b in zip(f.txs, g.txs, strict=True))
    check_fanout(g, make_dist(50), T)
    assert build_ctv_fanout(make_dist(50), T, CtvParams(arity=4), funding=g.funding) == g


# -- determinism (invariant 3) ----------------------------------------------------------------


def _bytes(f: CtvFanout) -> list[bytes]:
    return [o.serialize() for o in f.coinbase_outputs] + [t.tx.serialize() for t in f.txs]


@pytest.mark.parametrize("form", FORMS)
def test_deterministic_including_json_round_trip(form: str) -> None:
    dist = make_dist(500)
    p = CtvParams(form=form)  # type: ignore[arg-type]
    a = build_ctv_fanout(dist, T, p)
    b = build_ctv_fanout(dist, T, p)
    again = distribution_from_json(json.loads(json.dumps(distribution_to_json(dist))))
    c = build_ctv_fanout(again, T, p)
    assert _bytes(a) == _bytes(b) == _bytes(c)
    assert [t.template_hash for t in a.txs] == [t.template_hash for t in c.txs]
    assert a == c


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.integers(1, 10**6), min_size=0, max_size=80),
    revenue=st.integers(50_000, 5 * 10**9),
    arity=st.sampled_from([0, 2, 3, 5, 16]),
    fee_rate=st.sampled_from([0, 1, 7]),
    form=st.sampled_from(FORMS),
    extra=st.integers(0, 20_000),
)
def test_property_conservation_and_determinism(
    weights: list[int], revenue: int, arity: int, fee_rate: int, form: str, extra: int
) -> None:
    payees = tuple(
        Payee(p2tr(i + 1) if i % 2 else bytes([0, 20]) + bytes([i]) * 20, w, 0)
        for i, w in enumerate(weights)
    )
    dist = Distribution(
        9,
        PoolPayout(p2tr(0), 1 + sum(weights) // 10),
        payees,
        (AdditionalOutput(bytes.fromhex("0014" + "ee" * 20), extra),),
    )
    p = CtvParams(arity=arity, fee_rate=fee_rate, form=form)  # type: ignore[arg-type]
    try:
        f = build_ctv_fanout(dist, revenue, p)
    except CtvRevenueTooSmallError:
        return
    check_fanout(f, dist, revenue)
    assert _bytes(f) == _bytes(build_ctv_fanout(dist, revenue, p))


# -- errors -----------------------------------------------------------------------------------


def test_refuses_without_ctv_active() -> None:
    with pytest.raises(CtvNotActiveError) as e:
        ctv_settlement(make_dist(3), T, ctv_active=False)
    assert e.value.code == "ctv-not-active"
    assert "anyone-can-spend" in str(e.value)
    f = ctv_settlement(make_dist(3), T, ctv_active=True)
    assert _bytes(f) == _bytes(build_ctv_fanout(make_dist(3), T))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arity": 1},
        {"arity": -3},
        {"form": "p2wsh"},
        {"fee_rate": -1},
        {"version": 1},
        {"version": 4},
        {"anchor": False},  # no anchor and no fee: nothing could ever get it relayed
        {"version": 2},  # a 0-fee tx below the min relay feerate must be TRUC (v3)
        {"fee_rate": 100_001},
        {"arity": 0x10000},
        {"sequence": 1 << 32},
    ],
)
def test_bad_params(kwargs: dict[str, object]) -> None:
    with pytest.raises(CtvParamsError) as e:
        CtvParams(**kwargs)  # type: ignore[arg-type]
    assert e.value.code == "ctv-invalid-params"


def test_nonstandard_trees_are_refused() -> None:
    with pytest.raises(CtvNonStandardError, match="TRUC"):
        build_ctv_fanout(make_dist(300), T, CtvParams(arity=400, version=3, fee_rate=1))
    with pytest.raises(CtvNonStandardError, match="min relay"):
        # automatic version: a 0-fee tx over 10,000 vB would have to be v2, which cannot relay
        build_ctv_fanout(make_dist(300), T, CtvParams(arity=400))
    with pytest.raises(CtvNonStandardError, match="tx-size-small"):
        tiny = Distribution(1, PoolPayout(b"\x6a", 1))  # one 10-byte OP_RETURN output
        build_ctv_fanout(tiny, 1000, CtvParams(anchor=False, fee_rate=1))
    with pytest.raises(CtvNonStandardError, match="400,000"):
        build_ctv_fanout(make_dist(3000), T, CtvParams(arity=3000, fee_rate=1))


def test_revenue_too_small() -> None:
    with pytest.raises(CtvRevenueTooSmallError) as e:
        build_ctv_fanout(make_dist(100), 2_000, CtvParams(fee_rate=10))
    assert e.value.code == "ctv-revenue-too-small"
    with pytest.raises(CtvRevenueTooSmallError):
        build_ctv_fanout(Distribution(1, POOL), 100)  # pool output below dust


def test_golden_example_from_docs() -> None:
    """The bytes docs/ctv.md §8 prints: another implementation must reproduce them."""
    doc = {
        "distribution_id": 42,
        "pool_payout": {"script": "0014" + "aa" * 20, "weight": 100},
        "payouts": [
            {"script": "5120" + "bb" * 32, "weight": 600},
            {"script": "0014" + "cc" * 20, "weight": 300},
            {"script": "5120" + "dd" * 32, "weight": 1},
        ],
        "additional_outputs": [{"script": "6a0470617973", "amount": 0}],
    }
    f = build_ctv_fanout(distribution_from_json(doc), 312_500_000, CtvParams(arity=2, fee_rate=2))
    assert f.coinbase_outputs[0].script.hex() == (
        "20fa6f11f47e6b9d15853a1f14f662906368b6e77692b83dc3de6a33763dbc4b7ab3"
    )
    assert [t.tx.txid_hex for t in f.txs] == [
        "1a3db786ca5686f09fabb89cf27da64710e2b6f04655775928516cae01fab18b",
        "20078c7a34f117939b23c6522d1e43348518f4b9b4399be9b1a22c8a6551cd96",
        "7572793877bbefca002176e7e73c3518b36ace6a397099ba23d9e08f4f09c637",
    ]
    assert [e.output.value for e in f.exits] == [31218625, 187311745, 93655872, 312186]
    flat = build_ctv_fanout(distribution_from_json(doc), 312_500_000)
    assert flat.txs[0].tx.txid_hex == (
        "b2ec0fc13692afdde2b9848ca99580860bfca5e9b57912dfac85cc011eab38d5"
    )


@settings(max_examples=200, deadline=None)
@given(
    n=st.one_of(st.integers(1, 420), st.integers(230, 330)),
    kinds=st.lists(st.sampled_from([43, 31, 32, 34]), min_size=420, max_size=420),
    step=st.integers(2, 60),
    fee_rate=st.sampled_from([1, 2, 9]),
    version=st.sampled_from([3, None]),
    anchor=st.booleans(),
    form=st.sampled_from(FORMS),
)
def test_pruning_never_raises_the_cost_even_when_the_arity_changes(
    n: int, kinds: list[int], step: int, fee_rate: int, version: int | None, anchor: bool,
    form: str,
) -> None:
    """Spec §5.5 step 4: F1 ≤ F0 when each leaf set gets its own automatic arity: a 16-ary tree
    over L0 may become one flat tx over L1 (brute force: every tx's size from the real
    shape). Payees at multiples of ``step`` are pruned; the pool payout (leaf 0) never is."""
    p = CtvParams(fee_rate=fee_rate, version=version, anchor=anchor, form=form)  # type: ignore[arg-type]
    taproot = form == "taproot"

    def cost(leaves: list[int]) -> tuple[int, int | None]:
        arity = choose_arity(leaves, None, max_vsize=p.max_vsize, anchor=anchor, taproot=taproot)
        shape = build_shape(len(leaves), arity)
        vsizes = shape_vsizes(shape, leaves, anchor=anchor, taproot=taproot)
        return fee_rate * sum(vsizes) + (p.anchor_value or 0) * len(vsizes), arity

    sizes = kinds[:n]
    kept = [s for i, s in enumerate(sizes) if i == 0 or i % step]
    (f0, a0), (f1, a1) = cost(sizes), cost(kept)
    event(f"arity {a0} -> {a1}")
    assert f1 <= f0, (a0, a1)
