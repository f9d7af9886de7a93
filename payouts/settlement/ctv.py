"""The ``ctv`` settlement mode: one coinbase output committing (BIP-119) to a fan-out tree.

The coinbase carries one CTV commitment output worth T' = T − Σ additional, then the
distribution's additional outputs with their fixed amounts: a constant footprint whatever the
number of payees. That output is spent by the root of a fan-out tree (flat, or k-ary beyond
the policy size limits); every tree tx has one input whose spent script is
``<StandardTemplateHash> OP_CHECKTEMPLATEVERIFY`` (BIP-119), either bare or as the single
tapscript leaf of a P2TR output whose internal key is BIP-341's NUMS point H (no key path).
The leaves are the pool payout and the payees, with amounts from the PR #203 math applied to
what the tree can distribute after its own cost (rule in :func:`build_ctv_fanout`).

Fees (docs/ctv.md): every tx carries a P2A anchor (``OP_1 <4e73>``, Core ≥ 28) so anyone can
CPFP it. With a pre-committed fee rate of 0 the anchor is 0-value *ephemeral dust* (Core
``policy/ephemeral_policy.cpp``: a tx with a dust output must pay 0 fee, and any in-mempool
child must spend that dust) and the txs are TRUC, nVersion 3 (BIP-431, Core
``policy/truc_policy.h``), because only TRUC txs may sit below the min relay feerate (Core
``validation.cpp`` PreChecks "min relay fee not met ... The only exception is TRUC"). With a
fee rate > 0 each tx pays ``rate × vsize`` itself and the anchor holds 240 sat, the P2A dust
threshold, since a tx with a dust output must be 0-fee.

Safety (ARCHITECTURE invariant 4): :func:`ctv_settlement` refuses unless the caller says CTV is
active; on a chain without BIP-119 both output forms are anyone-can-spend. libbitcoinkernel
(our in-process consensus oracle) does not implement CTV either: it treats OP_CTV as OP_NOP4,
so it checks the tree's amounts and scripts but not the template commitments.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from payouts.distribution.amounts import PayoutResult, compute_outputs
from payouts.distribution.model import Distribution
from payouts.errors import PayoutsError, ValidationError
from payouts.settlement.ctv_commit import (
    FORMS,
    NUMS_H,
    Form,
    commitment_matches,
    commitment_script,
    commitment_witness,
)
from payouts.settlement.ctv_shape import (
    TAPROOT_SPEND_WITNESS_WU,
    Shape,
    build_shape,
    max_node_vsize_bound,
    shape_overhead,
    shape_vsizes,
)
from payouts.tx.ctv import standard_template_hash
from payouts.tx.output_scripts import dust_limit, output_size
from payouts.tx.transaction import SEQUENCE_FINAL, OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

__all__ = [
    "DEFAULT_ARITY",
    "FORMS",
    "NUMS_H",
    "P2A_SCRIPT",
    "CtvExit",
    "CtvFanout",
    "CtvNonStandardError",
    "CtvNotActiveError",
    "CtvParams",
    "CtvParamsError",
    "CtvRevenueTooSmallError",
    "CtvTx",
    "Form",
    "build_ctv_fanout",
    "commitment_matches",
    "commitment_script",
    "commitment_witness",
    "ctv_settlement",
]

P2A_SCRIPT = bytes.fromhex("51024e73")  # pay-to-anchor, standard since Core 28
P2A_DUST = dust_limit(P2A_SCRIPT)  # (13 + 67) × 3 = 240 sat: GetDustThreshold at 3 sat/vB
TRUC_VERSION = 3  # BIP-431; Core policy/truc_policy.h
TRUC_MAX_VSIZE = 10_000  # Core TRUC_MAX_VSIZE
MAX_STANDARD_TX_WEIGHT = 400_000  # Core policy/policy.h
MIN_STANDARD_TX_NONWITNESS_SIZE = 65  # Core policy/policy.h (64-byte txs confuse SPV proofs)
WITNESS_SCALE_FACTOR = 4
# Chosen from benchmarks/bench_ctv.py (docs/ctv.md): the full unroll costs ~1.17× a flat
# fan-out's bytes (k=64: 1.04×), while a lone payee's forced exit is half of k=64's (3.2 vs
# 6.8 kvB at N = 100,000) and within 1.6× of the smallest (k=4, which costs 1.83× to unroll).
DEFAULT_ARITY = 16
MAX_ARITY = 5_000  # far beyond any standard tx; only bounds the work of a mistaken input
PLACEHOLDER_FUNDING = OutPoint(bytes(32), 0)


class CtvNotActiveError(PayoutsError):
    """CTV settlement was requested on a chain where BIP-119 is not enforced."""

    code = "ctv-not-active"


class CtvParamsError(ValidationError):
    code = "ctv-invalid-params"


class CtvNonStandardError(ValidationError):
    """A fan-out tx would break a relay policy limit (TRUC size, standard weight, min fee)."""

    code = "ctv-tree-nonstandard"


class CtvRevenueTooSmallError(ValidationError):
    """The revenue cannot pay for the tree and leave every output above dust."""

    code = "ctv-revenue-too-small"


@dataclass(frozen=True, slots=True)
class CtvParams:
    """How to shape and price the fan-out. All of it is committed to, so both JD sides must use
    the same values (they travel with the settlement-mode extension).

    ``arity``: None or 0 = flat while the flat tx stays standard (TRUC 10,000 vB when it must be
    v3, else 400,000 WU), a :data:`DEFAULT_ARITY`-ary tree beyond; k ≥ 2 = a k-ary tree.
    ``fee_rate``: sat/vB every tx pays itself (0 = all fees come from anchor CPFP).
    ``version``: None = 3 (TRUC) when every tx can be ≤ 10,000 vB, else 2.
    """

    arity: int | None = None
    form: Form = "bare"
    anchor: bool = True
    fee_rate: int = 0
    version: int | None = None
    sequence: int = SEQUENCE_FINAL
    locktime: int = 0

    def __post_init__(self) -> None:
        if self.arity is not None and self.arity != 0 and not 2 <= self.arity <= MAX_ARITY:
            raise CtvParamsError(f"arity must be 0 (flat) or 2..{MAX_ARITY}, got {self.arity}")
        if self.form not in FORMS:
            raise CtvParamsError(f"form must be 'bare' or 'taproot', got {self.form!r}")
        if isinstance(self.fee_rate, bool) or not isinstance(self.fee_rate, int):
            raise CtvParamsError("fee_rate is an integer number of sat/vB")
        if not 0 <= self.fee_rate <= 100_000:
            raise CtvParamsError(f"fee_rate {self.fee_rate} sat/vB is out of range")
        if self.version is not None and self.version not in (2, TRUC_VERSION):
            raise CtvParamsError(
                "version must be 2 or 3 (Core's standard range is 1..3 and BIP-68/TRUC need ≥ 2)"
            )
        if not 0 <= self.sequence <= 0xFFFFFFFF or not 0 <= self.locktime <= 0xFFFFFFFF:
            raise CtvParamsError("nSequence and nLockTime are uint32")
        if not self.anchor and self.fee_rate == 0:
            raise CtvParamsError(
                "a fan-out without an anchor needs a pre-committed fee rate: with neither, no "
                "one can get its txs relayed or fee-bumped"
            )

    @property
    def anchor_value(self) -> int | None:
        """0 (ephemeral dust, needs a 0-fee tx) or 240 sat (P2A dust threshold) or no anchor."""
        if not self.anchor:
            return None
        return 0 if self.fee_rate == 0 else P2A_DUST


@dataclass(frozen=True, slots=True)
class CtvTx:
    """One fan-out tx. ``parent`` indexes :attr:`CtvFanout.txs` (None: spends the coinbase
    commitment); ``value`` is the committed output it spends, ``fee`` what it leaves to miners
    (anchor excluded)."""

    tx: Tx
    level: int
    parent: int | None
    parent_vout: int
    template_hash: bytes
    value: int
    fee: int

    @property
    def vsize(self) -> int:
        return self.tx.vsize


class CtvExit(NamedTuple):
    """Where one fan-out leaf is paid: ``txs[path[-1]].outputs[vout]``; ``path`` runs from the
    root and is what that payee must get confirmed, in order, to exit on its own. (A NamedTuple:
    one per payee, and 100,000 frozen dataclasses cost a third of a second to create.)"""

    payee: int | None  # index in Distribution.payouts; None for the pool payout
    output: TxOut
    path: tuple[int, ...]
    vout: int


@dataclass(frozen=True, slots=True)
class CtvFanout:
    """A built CTV settlement. Txs are in broadcast order (parents first)."""

    coinbase_outputs: tuple[TxOut, ...]
    txs: tuple[CtvTx, ...]
    pool: CtvExit
    payees: tuple[CtvExit, ...]  # kept payees, in distribution order
    payout: PayoutResult  # final amounts: pool absorbed F0 − F1; distributable = T' − cost
    arity: int | None  # None: flat
    version: int
    form: Form
    anchor_value: int | None
    fee_rate: int
    funding: OutPoint

    @property
    def commitment_output(self) -> TxOut:
        return self.coinbase_outputs[0]

    @property
    def fees(self) -> int:
        """Satoshis the tree's txs pay to miners themselves."""
        return sum(t.fee for t in self.txs)

    @property
    def anchors_total(self) -> int:
        return (self.anchor_value or 0) * len(self.txs)

    @property
    def tree_cost(self) -> int:
        """What the tree takes out of T': fees plus anchor values."""
        return self.fees + self.anchors_total

    @property
    def total_vbytes(self) -> int:
        return sum(t.tx.vsize for t in self.txs)

    @property
    def depth(self) -> int:
        return max(t.level for t in self.txs) + 1

    @property
    def exits(self) -> tuple[CtvExit, ...]:
        return (self.pool, *self.payees)

    def exit_vbytes(self, leaf: CtvExit) -> int:
        """vbytes a payee must get confirmed alone to reach its output (CPFP children aside)."""
        return sum(self.txs[i].tx.vsize for i in leaf.path)

    def bind(self, funding: OutPoint) -> CtvFanout:
        """The same tree spending ``funding`` (the coinbase txid and commitment vout, known once
        the block is found). Only prevouts, hence txids, change: CTV does not commit to them."""
        return replace(self, txs=_materialize(self.txs, funding, self.form), funding=funding)


# -- building ---------------------------------------------------------------------------------


def _resolve_shape(params: CtvParams, n_leaves: int, max_leaf: int) -> tuple[int | None, int]:
    """(arity or None for flat, nVersion), decided on bounds valid for any pruned subset."""
    taproot = params.form == "taproot"

    def bound(arity: int | None) -> int:
        return max_node_vsize_bound(
            n_leaves, arity, max_leaf, anchor=params.anchor, taproot=taproot
        )

    def version_for(vsize: int) -> int:
        if params.version is not None:
            return params.version
        return TRUC_VERSION if vsize <= TRUC_MAX_VSIZE else 2

    def problem(vsize: int, version: int) -> str | None:
        if vsize * WITNESS_SCALE_FACTOR > MAX_STANDARD_TX_WEIGHT:
            return f"a tx of up to {vsize} vB exceeds MAX_STANDARD_TX_WEIGHT (400,000 WU)"
        if version == TRUC_VERSION and vsize > TRUC_MAX_VSIZE:
            return f"a v3 (TRUC) tx of up to {vsize} vB exceeds TRUC_MAX_VSIZE (10,000 vB)"
        if version != TRUC_VERSION and params.fee_rate == 0:
            return (
                f"a 0-fee v{version} tx of up to {vsize} vB is not relayable: only TRUC (v3) txs "
                "may be below the min relay feerate, and v3 caps a tx at 10,000 vB; use a tree "
                "(smaller arity) or a fee rate"
            )
        return None

    arity = params.arity or None
    if arity is None:
        flat = bound(None)
        if problem(flat, version_for(flat)) is not None:
            arity = DEFAULT_ARITY if n_leaves > DEFAULT_ARITY else None
    vsize = bound(arity)
    version = version_for(vsize)
    why = problem(vsize, version)
    if why is not None:
        shape = "flat fan-out" if arity is None else f"{arity}-ary tree"
        raise CtvNonStandardError(f"{shape} for {n_leaves} outputs: {why}")
    return arity, version


def _tree_cost(leaf_sizes: list[int], arity: int | None, params: CtvParams) -> int:
    """fee_rate × Σ vsize + anchor_value × number of txs, for ``build_shape``'s tree."""
    n_txs, overhead = shape_overhead(
        len(leaf_sizes), arity, anchor=params.anchor, taproot=params.form == "taproot"
    )
    return params.fee_rate * (sum(leaf_sizes) + overhead) + (params.anchor_value or 0) * n_txs


def _policy_dust(dist: Distribution) -> Distribution:
    """Raise each payee's dust limit to Core's relay dust threshold for its script: fan-out
    outputs are relayed (unlike coinbase outputs), and a sub-dust one would make its tx
    non-standard (only the 0-value anchor may be dust).

    ``GetDustThreshold`` depends only on the script's length, its first byte (OP_RETURN,
    witness version) and second byte (witness push length), so it is computed once per such
    triple: 100,000 payees cost a dict lookup each."""
    cache: dict[tuple[int, bytes], int] = {}
    payees = []
    changed = False
    for p in dist.payouts:
        key = (len(p.script), p.script[:2])
        d = cache.get(key)
        if d is None:
            d = cache[key] = dust_limit(p.script)
        if p.dust_limit < d:
            p = replace(p, dust_limit=d)
            changed = True
        payees.append(p)
    return replace(dist, payouts=tuple(payees)) if changed else dist


def build_ctv_fanout(
    distribution: Distribution,
    revenue: int,
    params: CtvParams | None = None,
    *,
    funding: OutPoint | None = None,
) -> CtvFanout:
    """Build the ``ctv`` settlement for ``distribution`` at template revenue ``revenue`` (T).

    An offline calculator: it does **not** check that CTV is active; settlement code must call
    :func:`ctv_settlement`. ``funding`` is the coinbase outpoint of the commitment output,
    usually unknown until the block is found (its txid moves with the extranonce; CTV does not
    commit to outpoints): the default is the placeholder ``00…00:0`` and :meth:`CtvFanout.bind`
    fills it in later. The amount rule, in full (docs/ctv.md):

    1. leaves L0 = pool payout + every payee (none pruned); shape S0 = tree(|L0|);
       F0 = fee_rate × Σ vsize(S0) + anchor_value × |S0|.
    2. R = compute_outputs(D', T − F0), D' = D with each payee's dust limit raised to at least
       Core's relay dust threshold of its script (PR #203 math: floor, prune, pool absorbs).
    3. leaves L1 = R's pool payout + kept payees; S1 = tree(|L1|); F1 likewise (F1 ≤ F0).
    4. the pool payout gets R.pool + (F0 − F1); the fan-out pays exactly F1.
    Values then go bottom-up: a CTV output = Σ the outputs of the tx it funds + that tx's fee,
    and template hashes go bottom-up too (BIP-119 StandardTemplateHash, input index 0).
    """
    p = params or CtvParams()
    dist = _policy_dust(distribution)
    fixed = sum(a.amount for a in dist.additional_outputs)
    scripts0 = [dist.pool_payout.script, *(x.script for x in dist.payouts)]
    sizes0 = [output_size(s) for s in scripts0]
    arity, version = _resolve_shape(p, len(sizes0), max(sizes0))
    f0 = _tree_cost(sizes0, arity, p)
    if revenue - fixed - f0 <= 0:
        raise CtvRevenueTooSmallError(
            f"revenue {revenue} sat less {fixed} sat of additional outputs cannot pay the "
            f"fan-out's {f0} sat of fees and anchors"
        )
    result = compute_outputs(dist, revenue - f0)
    pruned = set(result.pruned)
    kept = [i for i in range(len(dist.payouts)) if i not in pruned]
    leaves = list(result.outputs[: 1 + len(kept)])
    sizes1 = [sizes0[0], *(sizes0[1 + i] for i in kept)]
    f1 = _tree_cost(sizes1, arity, p)
    if f1 > f0:  # pragma: no cover - the shape's overhead is non-decreasing in its leaf count
        raise AssertionError(f"tree cost rose after pruning ({f0} -> {f1})")
    pool = TxOut(result.pool_amount + f0 - f1, dist.pool_payout.script)
    leaves[0] = pool
    if pool.value < dust_limit(pool.script):
        raise CtvRevenueTooSmallError(
            f"the pool payout would be {pool.value} sat, below its dust threshold "
            f"{dust_limit(pool.script)}: revenue too small for this fan-out"
        )
    payout = replace(
        result,
        outputs=(pool, *result.outputs[1:]),
        pool_amount=pool.value,
        distributable=revenue - fixed - f1,
    )
    shape = build_shape(len(leaves), arity)
    nodes = _commit(shape, leaves, sizes1, p, version)
    if sum(n.fee for n in nodes) + (p.anchor_value or 0) * len(nodes) != f1:  # pragma: no cover
        raise AssertionError("per-tx sizes disagree with the shape's cost")
    coinbase = (TxOut(nodes[0].value, nodes[0].script), *result.outputs[1 + len(kept) :])
    if nodes[0].value != revenue - fixed:  # pragma: no cover - conservation, by construction
        raise AssertionError("the commitment output does not carry T − Σ additional")
    placeholder = tuple(
        CtvTx(
            n.template,
            shape.nodes[i].level,
            shape.nodes[i].parent,
            shape.nodes[i].parent_vout,
            n.hash,
            n.value,
            n.fee,
        )
        for i, n in enumerate(nodes)
    )
    txs = _materialize(placeholder, funding or PLACEHOLDER_FUNDING, p.form)
    paths = shape.paths()
    exits = [
        CtvExit(None if j == 0 else kept[j - 1], leaves[j], paths[node], vout)
        for j, (node, vout) in enumerate(shape.leaf_positions())
    ]
    return CtvFanout(
        coinbase_outputs=coinbase,
        txs=txs,
        pool=exits[0],
        payees=tuple(exits[1:]),
        payout=payout,
        arity=arity,
        version=version,
        form=p.form,
        anchor_value=p.anchor_value,
        fee_rate=p.fee_rate,
        funding=funding or PLACEHOLDER_FUNDING,
    )


@dataclass(frozen=True, slots=True)
class _Committed:
    template: Tx  # the node's tx with a placeholder prevout and no witness
    hash: bytes
    script: bytes  # the commitment output its parent carries
    value: int
    fee: int


def _commit(
    shape: Shape, leaves: list[TxOut], sizes: list[int], p: CtvParams, version: int
) -> list[_Committed]:
    """Values and BIP-119 hashes, bottom-up: a node's outputs embed its children's hashes."""
    taproot = p.form == "taproot"
    vsizes = shape_vsizes(shape, sizes, anchor=p.anchor, taproot=taproot)
    witness_vb = TAPROOT_SPEND_WITNESS_WU // WITNESS_SCALE_FACTOR if taproot else 0
    if min(vsizes) - witness_vb < MIN_STANDARD_TX_NONWITNESS_SIZE:
        raise CtvNonStandardError(
            f"a fan-out tx would be {min(vsizes) - witness_vb} bytes without witness; Core "
            f"rejects txs under {MIN_STANDARD_TX_NONWITNESS_SIZE} (tx-size-small)"
        )
    # Both forms are 34-byte scripts of one type, so one threshold covers every commitment.
    commit_dust = dust_limit(commitment_script(bytes(32), p.form))
    anchor = () if p.anchor_value is None else (TxOut(p.anchor_value, P2A_SCRIPT),)
    txin = (TxIn(PLACEHOLDER_FUNDING, b"", p.sequence),)
    done: list[_Committed | None] = [None] * len(shape.nodes)
    for node in reversed(shape.nodes):  # children always have larger indices than parents
        outs: list[TxOut] = []
        for e in node.entries:
            if e >= 0:
                outs.append(leaves[e])
            else:
                child = done[~e]
                assert child is not None
                if child.value < commit_dust:
                    raise CtvRevenueTooSmallError(
                        f"a commitment output would hold {child.value} sat, below its relay dust "
                        f"threshold {commit_dust}"
                    )
                outs.append(TxOut(child.value, child.script))
        outs.extend(anchor)
        fee = p.fee_rate * vsizes[node.index]
        template = Tx(version, txin, tuple(outs), p.locktime)
        h = standard_template_hash(template, 0)
        value = sum(o.value for o in outs) + fee
        done[node.index] = _Committed(template, h, commitment_script(h, p.form), value, fee)
    out = [c for c in done if c is not None]
    assert len(out) == len(shape.nodes)
    return out


def _materialize(txs: tuple[CtvTx, ...], funding: OutPoint, form: Form) -> tuple[CtvTx, ...]:
    """Fill in prevouts top-down (a child spends its parent's txid) and the spend witnesses."""
    out: list[CtvTx] = []
    for t in txs:
        prevout = funding if t.parent is None else OutPoint(out[t.parent].tx.txid, t.parent_vout)
        old = t.tx.inputs[0]
        txin = TxIn(prevout, b"", old.sequence, commitment_witness(t.template_hash, form))
        tx = Tx(t.tx.version, (txin,), t.tx.outputs, t.tx.locktime)
        out.append(CtvTx(tx, t.level, t.parent, t.parent_vout, t.template_hash, t.value, t.fee))
    return tuple(out)


def ctv_settlement(
    distribution: Distribution,
    revenue: int,
    params: CtvParams | None = None,
    *,
    ctv_active: bool,
    funding: OutPoint | None = None,
) -> CtvFanout:
    """:func:`build_ctv_fanout`, refused unless ``ctv_active`` (from the node's deployment info,
    e.g. ``getdeploymentinfo`` → ``checktemplateverify`` active) is exactly True.

    Raises :class:`CtvNotActiveError` (code ``ctv-not-active``) otherwise: without BIP-119
    OP_CHECKTEMPLATEVERIFY is OP_NOP4, so a bare ``<32B> OP_NOP4`` output is anyone-can-spend,
    and so is the taproot form's leaf (anyone who learns the hash can reveal it)."""
    if ctv_active is not True:
        raise CtvNotActiveError(
            "CTV (BIP-119 checktemplateverify) is not active on this chain: there a bare "
            "'<32B> OP_CHECKTEMPLATEVERIFY' output is anyone-can-spend (OP_NOP4 leaves the hash "
            "as a true stack item), and so is the taproot CTV leaf; refusing to emit a CTV "
            "settlement (use a chain that enforces CTV, e.g. Bitcoin Inquisition regtest/signet)"
        )
    return build_ctv_fanout(distribution, revenue, params, funding=funding)
