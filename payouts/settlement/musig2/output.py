"""The ``musig2`` coinbase output: P2TR, MuSig2 committee key path, CTV exit and timelocked
fallback script leaves (BIP-327, BIP-340, BIP-341, BIP-342, BIP-119, BIP-68/112).

Construction (docs/musig2.md), every step a pure function of its inputs so the JD client and the
JD server derive byte-identical outputs (ARCHITECTURE invariant 3):

1. **Committee** (:func:`choose_committee`): the payees with a registered key, largest weight
   first (ties: script bytes), at most ``max_signers``; signer order is BIP-327 KeySort.
2. **Internal key**: BIP-327 KeyAgg of the committee (x-only, BIP-340).
3. **Payout tx** (:func:`payout_split`): spends the coinbase output, pays the pool payout and
   the payees by the PR #203 math on (output value − fee); fee = ``fee_rate`` × vsize of the tx
   with a 64-byte key-path witness (two-pass rule, below).
4. **Script tree**: the fallback leaf ``<n> OP_CSV OP_DROP <fallback_key> OP_CHECKSIG`` and, only
   when the caller says CTV is active, the CTV leaf ``<StandardTemplateHash(payout tx)>
   OP_CHECKTEMPLATEVERIFY``; two leaves make a balanced tree (both at depth 1), one leaf is the
   root itself.
5. **Output key**: BIP-341 ``taproot_tweak_pubkey(internal, merkle_root)``; scriptPubKey
   ``OP_1 <Q>``.

The coinbase carries this output worth T' = T − Σ additional outputs, then the distribution's
additional outputs with their fixed amounts (as in the ``ctv`` mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from payouts.crypto import musig2
from payouts.crypto.schnorr import SchnorrError, parse_xonly
from payouts.crypto.taproot import (
    TapLeaf,
    TapTree,
    control_block,
    p2tr_script,
    taptree_root,
    tweak_pubkey,
)
from payouts.distribution.amounts import PayoutResult, compute_outputs
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.musig2.session import DEFAULT_MAX_SIGNERS
from payouts.settlement.relay_policy import (
    MAX_STANDARD_TX_WEIGHT,
    refuse_sigop_dense,
    relay_dust,
)
from payouts.tx.ctv import ctv_tapleaf, standard_template_hash
from payouts.tx.output_scripts import dust_limit
from payouts.tx.script import OP_CHECKSEQUENCEVERIFY, OP_CHECKSIG, OP_DROP, push_data, push_int
from payouts.tx.transaction import SEQUENCE_FINAL, OutPoint, Tx, TxIn
from payouts.tx.txout import TxOut

__all__ = [
    "COINBASE_MATURITY",
    "DEFAULT_FALLBACK_DELAY",
    "KEYPATH_WITNESS",
    "MAX_FALLBACK_DELAY",
    "MIN_FALLBACK_DELAY",
    "PAYOUT_SEQUENCE",
    "PAYOUT_VERSION",
    "PLACEHOLDER_FUNDING",
    "Committee",
    "Musig2NonStandardError",
    "Musig2Output",
    "Musig2Params",
    "Musig2ParamsError",
    "Musig2RevenueTooSmallError",
    "NoCommitteeError",
    "PayoutSplit",
    "build_musig2_output",
    "choose_committee",
    "fallback_script",
    "payout_split",
]

COINBASE_MATURITY = 100  # Core consensus/consensus.h COINBASE_MATURITY
# BIP-68 counts the relative lock from the block that confirmed the coinbase, and the coinbase
# cannot move before 100 confirmations anyway: a delay ≤ 100 would open the fallback the very
# block the cooperative spend becomes possible, leaving the committee no time to sign.
MIN_FALLBACK_DELAY = COINBASE_MATURITY + 1
MAX_FALLBACK_DELAY = 0xFFFF  # BIP-68: the block count is the low 16 bits of nSequence
# Maturity plus one day of blocks for the signing session (and its retries) before the fallback.
DEFAULT_FALLBACK_DELAY = COINBASE_MATURITY + 144
MAX_FEE_RATE = 100_000  # sat/vB; only bounds a mistaken input
PAYOUT_VERSION = 2  # BIP-68 relative locks need nVersion ≥ 2 (the fallback spend uses one)
# The cooperative/CTV spend has no relative lock; CTV commits to nSequence, so it is fixed here.
PAYOUT_SEQUENCE = SEQUENCE_FINAL
PLACEHOLDER_FUNDING = OutPoint(bytes(32), 0)  # the coinbase txid is unknown until the block
# A BIP-341 key-path witness with SIGHASH_DEFAULT: one 64-byte BIP-340 signature (no hash byte).
KEYPATH_WITNESS: tuple[bytes, ...] = (bytes(64),)


class Musig2ParamsError(ValidationError):
    code = "musig2-invalid-params"


class Musig2NonStandardError(ValidationError):
    """The payout tx would exceed Core's standard weight: it could not be relayed."""

    code = "musig2-payout-nonstandard"


class NoCommitteeError(ValidationError):
    """No payee of the distribution registered a usable key."""

    code = "musig2-no-committee"


class Musig2RevenueTooSmallError(ValidationError):
    """The output value cannot pay the payout tx's fee and leave the pool payout above dust."""

    code = "musig2-revenue-too-small"


# -- committee --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Committee:
    """The signers: ``pubkeys`` in BIP-327 KeySort order (signer index = position), and for each
    the payee script that registered it (empty when the committee came over the wire, e.g. the
    ``musig2_committee`` field of SetSettlementMode, which carries keys only)."""

    pubkeys: tuple[bytes, ...]
    scripts: tuple[bytes, ...] = ()

    @classmethod
    def from_pubkeys(cls, pubkeys: Sequence[bytes]) -> Committee:
        """A committee from its keys alone. They must already be in KeySort order and distinct:
        the order is the aggregation order, so accepting another would give another key
        (refused rather than silently re-sorted, so both JD sides see the same list)."""
        keys = tuple(bytes(k) for k in pubkeys)
        if not keys:
            raise NoCommitteeError("a committee needs at least one key")
        try:
            musig2.key_agg(list(keys))
        except (musig2.InvalidContributionError, musig2.MuSig2Error) as e:
            raise Musig2ParamsError(f"committee key does not parse: {e}") from None
        if list(keys) != musig2.key_sort(list(keys)) or len(set(keys)) != len(keys):
            raise Musig2ParamsError("committee keys must be distinct and in BIP-327 KeySort order")
        return cls(keys)

    def __len__(self) -> int:
        return len(self.pubkeys)

    def index_of(self, pubkey: bytes) -> int:
        """Signer index of ``pubkey`` (ValueError if it is not a member)."""
        return self.pubkeys.index(pubkey)


def choose_committee(
    distribution: Distribution,
    registered: Mapping[bytes, bytes],
    max_signers: int = DEFAULT_MAX_SIGNERS,
) -> Committee:
    """Pick the signing committee (pure, deterministic).

    ``registered`` maps a payee scriptPubKey to the 33-byte compressed key its owner registered
    (BIP-327 individual public key). Rule: sum the weights of the distribution's payees per
    script; rank the scripts with a registered key by weight, descending, ties by script bytes
    ascending; walk that ranking skipping a key already taken by a higher-ranked script (one
    payee must not hold two slots: BIP-327 allows it, but it blurs blame); stop at
    ``max_signers``. Signer order is then BIP-327 KeySort of the chosen keys, so the iteration
    order of ``registered`` and of the payees never matters.

    The choice uses weights only, not the revenue: a payee pruned as dust at some T is still a
    member. The pool payout script is not a payee and is not considered.
    Raises :class:`NoCommitteeError` when no payee has a valid registered key.
    """
    if isinstance(max_signers, bool) or not isinstance(max_signers, int) or max_signers < 1:
        raise Musig2ParamsError("max_signers must be a positive integer")
    weight: dict[bytes, int] = {}
    for p in distribution.payouts:
        weight[p.script] = weight.get(p.script, 0) + p.weight
    ranked = sorted((s for s in weight if s in registered), key=lambda s: (-weight[s], s))
    chosen: dict[bytes, bytes] = {}  # pubkey -> script
    for script in ranked:
        key = bytes(registered[script])
        try:
            # Parse now: a bad registration fails here, naming its script, not inside KeyAgg.
            musig2.key_agg([key])
        except (musig2.InvalidContributionError, musig2.MuSig2Error):
            raise Musig2ParamsError(
                f"registered key for script {script.hex()} is not a valid 33-byte public key"
            ) from None
        if key in chosen:
            continue
        chosen[key] = script
        if len(chosen) == max_signers:
            break
    if not chosen:
        raise NoCommitteeError("no payee of this distribution has registered a signing key")
    keys = musig2.key_sort(list(chosen))
    return Committee(tuple(keys), tuple(chosen[k] for k in keys))


# -- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Musig2Params:
    """Everything the output commits to besides the distribution, T and the key registry; both
    JD sides must use the same values.

    ``fallback_key``: 32-byte x-only BIP-340 key of the fallback holder (the pool, or a
    designated party); ``fallback_delay``: n, relative blocks (BIP-68) from the coinbase's
    confirmation, :data:`MIN_FALLBACK_DELAY`..:data:`MAX_FALLBACK_DELAY`; ``fee_rate``: sat/vB
    the payout tx pays (≥ 1: a 0-fee non-TRUC tx without an anchor can never be relayed);
    ``max_signers``: committee bound.
    """

    fallback_key: bytes
    fallback_delay: int = DEFAULT_FALLBACK_DELAY
    fee_rate: int = 1
    max_signers: int = DEFAULT_MAX_SIGNERS

    def __post_init__(self) -> None:
        if not isinstance(self.fallback_key, bytes) or len(self.fallback_key) != 32:
            raise Musig2ParamsError("fallback_key is a 32-byte x-only public key (BIP-340)")
        try:
            parse_xonly(self.fallback_key)
        except SchnorrError:
            raise Musig2ParamsError("fallback_key is not an x coordinate on the curve") from None
        for name, lo, hi in (
            ("fallback_delay", MIN_FALLBACK_DELAY, MAX_FALLBACK_DELAY),
            ("fee_rate", 1, MAX_FEE_RATE),
            ("max_signers", 1, 10_000),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise Musig2ParamsError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")


def fallback_script(delay: int, fallback_key: bytes) -> bytes:
    """``<n> OP_CHECKSEQUENCEVERIFY OP_DROP <fallback_key> OP_CHECKSIG`` (BIP-112, BIP-342).

    ``n`` is pushed minimally (``push_int``; MINIMALDATA is consensus in tapscript); with bit
    22 clear it counts blocks (BIP-68).
    """
    return (
        push_int(delay)
        + bytes((OP_CHECKSEQUENCEVERIFY, OP_DROP))
        + push_data(fallback_key)
        + bytes((OP_CHECKSIG,))
    )


# -- the payout tx and its fee rule -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayoutSplit:
    """The outputs of a spend of the musig2 output and the fee it pays (``fee`` = ``fee_rate``
    × the tx's vsize with the witness it was priced for)."""

    outputs: tuple[TxOut, ...]
    payout: PayoutResult
    fee: int
    vsize: int
    reserved: int = 0  # F0: the fee of the tx with every payee, taken before the split


def _relay_dust(dist: Distribution) -> Distribution:
    """The payout tx is relayed, unlike a coinbase: each payee's dust limit raised to Core's
    ``GetDustThreshold`` for its script (same rule as the ``ctv`` mode), and the additional
    outputs dropped (they are paid in the coinbase)."""
    return replace(relay_dust(dist), additional_outputs=())


def _spend_tx(
    outputs: tuple[TxOut, ...], witness: tuple[bytes, ...], sequence: int, funding: OutPoint
) -> Tx:
    return Tx(PAYOUT_VERSION, (TxIn(funding, b"", sequence, witness),), outputs, 0)


def payout_split(
    distribution: Distribution,
    value: int,
    fee_rate: int,
    *,
    witness: tuple[bytes, ...] = KEYPATH_WITNESS,
    sequence: int = PAYOUT_SEQUENCE,
) -> PayoutSplit:
    """Amounts of the tx spending the musig2 output worth ``value`` (T − Σ additional).

    The fee rule, exactly (docs/musig2.md "Fee rule"); ``witness`` is a stand-in of the real
    witness's sizes (64 zero bytes for the key path):

    1. tx0 = every payee unpruned plus the pool payout; F0 = fee_rate × vsize(tx0).
    2. R = compute_outputs(D', value − F0), D' = D without additional outputs and with each
       payee's dust limit raised to its relay dust threshold (PR #203: floor, prune, pool
       absorbs the rest).
    3. tx1 = R's outputs; F1 = fee_rate × vsize(tx1) ≤ F0 (pruning only shrinks the tx).
    4. The pool payout gets R.pool + (F0 − F1): the tx pays exactly F1 = fee_rate × its vsize.
    """
    dist = _relay_dust(distribution)
    scripts = [dist.pool_payout.script, *(p.script for p in dist.payouts)]
    tx0 = _spend_tx(tuple(TxOut(0, s) for s in scripts), witness, sequence, PLACEHOLDER_FUNDING)
    f0 = fee_rate * tx0.vsize
    if value - f0 <= 0:
        raise Musig2RevenueTooSmallError(
            f"output value {value} sat cannot pay the payout tx's fee of {f0} sat"
        )
    r = compute_outputs(dist, value - f0)
    tx1 = _spend_tx(r.outputs, witness, sequence, PLACEHOLDER_FUNDING)
    f1 = fee_rate * tx1.vsize
    if f1 > f0:  # pragma: no cover - a tx with fewer outputs is never larger
        raise AssertionError("payout tx grew after pruning")
    pool = TxOut(r.pool_amount + f0 - f1, dist.pool_payout.script)
    if pool.value < dust_limit(pool.script):
        raise Musig2RevenueTooSmallError(
            f"the pool payout would be {pool.value} sat, below its dust threshold "
            f"{dust_limit(pool.script)}"
        )
    outputs = (pool, *r.outputs[1:])
    payout = replace(r, outputs=outputs, pool_amount=pool.value, distributable=value - f1)
    if sum(o.value for o in outputs) + f1 != value:  # pragma: no cover - conservation
        raise AssertionError("payout split does not conserve the output value")
    return PayoutSplit(outputs, payout, f1, tx1.vsize, f0)


# -- the output -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Musig2Output:
    """A built ``musig2`` settlement output and everything needed to spend it.

    ``payout_tx`` is the unsigned cooperative payout tx spending :data:`PLACEHOLDER_FUNDING`;
    :meth:`payout_tx_for` binds it to the real coinbase outpoint (BIP-119 does not commit to
    outpoints, so the CTV leaf stays valid).
    """

    distribution: Distribution
    committee: Committee
    params: Musig2Params
    internal_key: bytes  # x-only BIP-327 aggregate (BIP-341 internal key P)
    output_key: bytes  # x-only Q = P + hash_TapTweak(P || root)·G
    output_parity: int
    fallback_leaf: TapLeaf
    ctv_leaf: TapLeaf | None
    tree: TapTree
    merkle_root: bytes
    value: int  # T' = T − Σ additional
    coinbase_outputs: tuple[TxOut, ...]  # this output first, then the additional outputs
    split: PayoutSplit
    payout_tx: Tx

    @property
    def script_pubkey(self) -> bytes:
        return p2tr_script(self.output_key)

    @property
    def txout(self) -> TxOut:
        """The coinbase output itself (what a spend's BIP-341 sighash commits to)."""
        return self.coinbase_outputs[0]

    @property
    def template_hash(self) -> bytes | None:
        """BIP-119 hash the CTV leaf commits to (None without CTV)."""
        return None if self.ctv_leaf is None else self.ctv_leaf.script[1:33]

    def control_block(self, leaf: TapLeaf) -> bytes:
        """BIP-341 control block for a script-path spend of ``leaf``."""
        return control_block(self.internal_key, self.tree, leaf)

    def payout_tx_for(self, funding: OutPoint, witness: tuple[bytes, ...] = ()) -> Tx:
        """The payout tx spending ``funding`` (coinbase txid, vout 0), with ``witness``."""
        return _spend_tx(self.payout_tx.outputs, witness, PAYOUT_SEQUENCE, funding)


def _check_spends_standard(
    distribution: Distribution,
    value: int,
    params: Musig2Params,
    split: PayoutSplit,
    internal_key: bytes,
    tree: TapTree,
    ctv_leaf: TapLeaf | None,
    fallback_leaf: TapLeaf,
) -> None:
    """Refuse (:class:`Musig2NonStandardError`) an output one of whose spends would weigh
    more than MAX_STANDARD_TX_WEIGHT, on their real bytes (spec §6.5): the payout tx with its
    heaviest committed witness (the CTV exit's leaf and control block, else the 64-byte key
    path) and the fallback spend (priced for its own witness and nSequence, so it may prune
    more payees: its outputs are a subset of the payout tx's). The payout tx is one flat tx;
    beyond ~2,300 P2TR payees a pool should use the ``ctv`` mode's k-ary tree."""

    def refuse(what: str, weight: int) -> None:
        raise Musig2NonStandardError(
            f"{what} of {weight} WU exceeds MAX_STANDARD_TX_WEIGHT ({MAX_STANDARD_TX_WEIGHT} WU)"
        )

    exit_witness = (
        KEYPATH_WITNESS
        if ctv_leaf is None
        else (ctv_leaf.script, control_block(internal_key, tree, ctv_leaf))
    )
    tx = _spend_tx(split.outputs, exit_witness, PAYOUT_SEQUENCE, PLACEHOLDER_FUNDING)
    if tx.weight > MAX_STANDARD_TX_WEIGHT:
        refuse("the payout tx" if ctv_leaf is None else "the payout tx's CTV exit", tx.weight)
    n = params.fallback_delay
    fb_witness = (bytes(64), fallback_leaf.script, control_block(internal_key, tree, fallback_leaf))
    bound = _spend_tx(split.outputs, fb_witness, n, PLACEHOLDER_FUNDING)
    if bound.weight <= MAX_STANDARD_TX_WEIGHT:
        return  # the fallback pays a subset of these outputs with this witness
    fb = payout_split(distribution, value, params.fee_rate, witness=fb_witness, sequence=n)
    fb_tx = _spend_tx(fb.outputs, fb_witness, n, PLACEHOLDER_FUNDING)
    if fb_tx.weight > MAX_STANDARD_TX_WEIGHT:
        refuse("the fallback spend", fb_tx.weight)


def build_musig2_output(
    distribution: Distribution,
    revenue: int,
    committee: Committee | Mapping[bytes, bytes],
    params: Musig2Params,
    *,
    ctv_active: bool,
) -> Musig2Output:
    """Build the ``musig2`` settlement for ``distribution`` at template revenue ``revenue`` (T).

    ``committee``: a :class:`Committee` (the JD client's case: keys from the wire, via
    :meth:`Committee.from_pubkeys`), or the key registry, payee script -> 33-byte key, from
    which :func:`choose_committee` picks it (the pool's case).
    ``ctv_active``: the caller's statement, from the node, that BIP-119 is enforced; only then
    is the CTV exit leaf added (ARCHITECTURE invariant 4: where CTV is not enforced,
    OP_CHECKTEMPLATEVERIFY is OP_NOP4 and ``<hash> OP_NOP4`` leaves a true stack item, so anyone
    who can recompute the payout tx, i.e. anyone who knows the distribution, could spend the
    output through that leaf to anywhere).
    """
    if isinstance(revenue, bool) or not isinstance(revenue, int):
        raise Musig2ParamsError("revenue is an integer number of satoshis")
    if not isinstance(committee, Committee):
        committee = choose_committee(distribution, committee, params.max_signers)
    elif not 1 <= len(committee) <= params.max_signers:
        raise Musig2ParamsError(f"committee size must be 1..{params.max_signers}")
    scripts = [distribution.pool_payout.script, *(x.script for x in distribution.payouts)]
    refuse_sigop_dense(scripts, Musig2NonStandardError)
    fixed = sum(a.amount for a in distribution.additional_outputs)
    value = revenue - fixed
    if value <= 0:
        raise Musig2RevenueTooSmallError(
            f"revenue {revenue} sat leaves nothing after {fixed} sat of additional outputs"
        )
    split = payout_split(distribution, value, params.fee_rate)
    payout_tx = _spend_tx(split.outputs, (), PAYOUT_SEQUENCE, PLACEHOLDER_FUNDING)
    fallback_leaf = TapLeaf(fallback_script(params.fallback_delay, params.fallback_key))
    ctv_leaf: TapLeaf | None = None
    tree: TapTree = fallback_leaf
    if ctv_active is True:
        # The exit is the payout tx itself: same outputs, same fee, only the witness differs.
        ctv_leaf = ctv_tapleaf(standard_template_hash(payout_tx, 0))
        tree = (ctv_leaf, fallback_leaf)
    root = taptree_root(tree)
    assert root is not None
    internal = musig2.key_agg(list(committee.pubkeys)).xonly_pubkey
    _check_spends_standard(
        distribution, value, params, split, internal, tree, ctv_leaf, fallback_leaf
    )
    output_key, parity = tweak_pubkey(internal, root)
    coinbase_outputs = (
        TxOut(value, p2tr_script(output_key)),
        *(TxOut(a.amount, a.script) for a in distribution.additional_outputs),
    )
    return Musig2Output(
        distribution=distribution,
        committee=committee,
        params=params,
        internal_key=internal,
        output_key=output_key,
        output_parity=parity,
        fallback_leaf=fallback_leaf,
        ctv_leaf=ctv_leaf,
        tree=tree,
        merkle_root=root,
        value=value,
        coinbase_outputs=coinbase_outputs,
        split=split,
        payout_tx=payout_tx,
    )
