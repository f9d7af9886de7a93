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
    DEFAULT_ARITY,
    TAPROOT_SPEND_WITNESS_WU,
    Shape,
    build_shape,
    choose_arity,
    shape_overhead,
    shape_vsizes,
)
from payouts.settlement.relay_policy import (
    MAX_STANDARD_TX_WEIGHT,
    MIN_STANDARD_TX_NONWITNESS_SIZE,
    TRUC_MAX_VSIZE,
    TRUC_VERSION,
    WITNESS_SCALE_FACTOR,
    refuse_sigop_dense,
    relay_dust,
)
from payouts.tx.ctv import standard_template_hash
from payouts.tx.output_scripts import dust_limit, output_size
from payouts.tx.transaction import SEQUENCE_FINAL, OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

__all__ = [
    "DEFAULT_ARITY",
    "FORMS",
    "MAX_ARITY",
    "MAX_FEE_RATE",
    "NUMS_H",
    "P2A_DUST",
    "P2A_SCRIPT",
    "TRUC_MAX_VSIZE",
    "TRUC_VERSION",
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
# The wire's U16: any k ≥ the leaf count is one flat tx, and no standard tx has more than
# 400,000 WU / (4 × 9 WU) < 11,112 outputs, so every meaningful arity fits.
MAX_ARITY = 0xFFFF
MAX_FEE_RATE = 100_000  # sat/vB; only bounds a mistaken input
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

    ``arity``: None or 0 = flat when the flat tx's real vsize is at most :attr:`max_vsize`, a
    :data:`DEFAULT_ARITY`-ary tree beyond; k ≥ 2 = a k-ary tree (k ≥ the leaf count: flat).
    ``fee_rate``: sat/vB every tx pays itself (0 = all fees come from anchor CPFP).
    ``version``: None = 3 (TRUC) when every tx of the final tree is at most 10,000 vB, else 2.
    The spec: docs/extensions/0x4003-settlement-modes.md §5.
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
        if not 0 <= self.fee_rate <= MAX_FEE_RATE:
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
        if self.version == 2 and self.fee_rate == 0:
            raise CtvParamsError(
                "a 0-fee fan-out must be TRUC (v3): Core relays no other tx below the min relay "
                "feerate, so version 2 needs a fee rate"
            )

    @property
    def max_vsize(self) -> int:
        """The largest vsize a fan-out tx may have: 10,000 vB (TRUC) when it must be v3 (a
        0-fee tx, or version 3 asked for), else 100,000 vB (MAX_STANDARD_TX_WEIGHT)."""
        if self.fee_rate == 0 or self.version == TRUC_VERSION:
            return TRUC_MAX_VSIZE
        return MAX_STANDARD_TX_WEIGHT // WITNESS_SCALE_FACTOR

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
    reserved: int  # F0: the cost of the unpruned leaves' tree, taken from T' before the split
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


def _arity(p: CtvParams, leaf_sizes: list[int]) -> int | None:
    """The tree arity for these leaves (None: flat), decided on their real sizes (spec §5.4)."""
    return choose_arity(
        leaf_sizes,
        p.arity or None,
        max_vsize=p.max_vsize,
        anchor=p.anchor,
        taproot=p.form == "taproot",
    )


def _tree_cost(leaf_sizes: list[int], arity: int | None, params: CtvParams) -> int:
    """fee_rate × Σ vsize + anchor_value × number of txs, for ``build_shape``'s tree."""
    n_txs, overhead = shape_overhead(
        len(leaf_sizes), arity, anchor=params.anchor, taproot=params.form == "taproot"
    )
    return params.fee_rate * (sum(leaf_sizes) + overhead) + (params.anchor_value or 0) * n_txs


def _version(p: CtvParams, shape: Shape, vsizes: list[int]) -> int:
    """nVersion of every tx of the final tree, and the relay policy checks on its real sizes
    (spec §5.6): the version asked for, or 3 when every tx is at most 10,000 vB, else 2."""
    largest = max(vsizes)
    version = p.version or (TRUC_VERSION if largest <= TRUC_MAX_VSIZE else 2)
    why = None
    if largest * WITNESS_SCALE_FACTOR > MAX_STANDARD_TX_WEIGHT:
        why = f"a tx of {largest} vB exceeds MAX_STANDARD_TX_WEIGHT (400,000 WU)"
    elif version == TRUC_VERSION and largest > TRUC_MAX_VSIZE:
        why = f"a v3 (TRUC) tx of {largest} vB exceeds TRUC_MAX_VSIZE (10,000 vB)"
    elif version != TRUC_VERSION and p.fee_rate == 0:
        why = (
            f"a 0-fee tx of {largest} vB is not relayable: only TRUC (v3) txs may be below the "
            "min relay feerate, and v3 caps a tx at 10,000 vB; use a smaller arity or a fee rate"
        )
    else:
        witness_vb = TAPROOT_SPEND_WITNESS_WU // WITNESS_SCALE_FACTOR if p.form == "taproot" else 0
        if min(vsizes) - witness_vb < MIN_STANDARD_TX_NONWITNESS_SIZE:
            why = (
                f"a tx would be {min(vsizes) - witness_vb} bytes without witness; Core rejects "
                f"txs under {MIN_STANDARD_TX_NONWITNESS_SIZE} (tx-size-small)"
            )
    if why is not None:
        what = "flat fan-out" if shape.arity is None else f"{shape.arity}-ary tree"
        raise CtvNonStandardError(f"{what} for {shape.n_leaves} outputs: {why}")
    return version


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
    fills it in later. The rule, in full (docs/extensions/0x4003-settlement-modes.md §5):

    1. every leaf script (pool payout and payees) passes the sigop-density rule;
    2. leaves L0 = pool payout + every payee (none pruned); arity A0 decided on L0's real
       sizes; F0 = fee_rate × Σ vsize(tree(L0, A0)) + anchor_value × its tx count;
    3. R = compute_outputs(D', T − F0), D' = D with each payee's dust limit raised to at least
       Core's relay dust threshold of its script (PR #203 math: floor, prune, pool absorbs);
    4. leaves L1 = R's pool payout + kept payees; arity A1 decided on L1's real sizes; F1 the
       same cost of tree(L1, A1) (F1 ≤ F0); the pool payout gets R.pool + (F0 − F1);
    5. nVersion and every relay-policy check on the real txs of tree(L1, A1);
    6. values bottom-up (a CTV output = Σ the outputs of the tx it funds + that tx's fee) and
       BIP-119 StandardTemplateHash (input index 0) bottom-up; prevouts top-down.
    """
    p = params or CtvParams()
    dist = relay_dust(distribution)
    fixed = sum(a.amount for a in dist.additional_outputs)
    scripts0 = [dist.pool_payout.script, *(x.script for x in dist.payouts)]
    refuse_sigop_dense(scripts0, CtvNonStandardError)
    sizes0 = [output_size(s) for s in scripts0]
    f0 = _tree_cost(sizes0, _arity(p, sizes0), p)
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
    arity = _arity(p, sizes1)
    f1 = _tree_cost(sizes1, arity, p)
    if f1 > f0:  # pragma: no cover - fewer leaves never cost more (spec §5.5, tested)
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
    vsizes = shape_vsizes(shape, sizes1, anchor=p.anchor, taproot=p.form == "taproot")
    version = _version(p, shape, vsizes)
    nodes = _commit(shape, leaves, vsizes, p, version)
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
        reserved=f0,
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
    shape: Shape, leaves: list[TxOut], vsizes: list[int], p: CtvParams, version: int
) -> list[_Committed]:
    """Values and BIP-119 hashes, bottom-up: a node's outputs embed its children's hashes."""
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
