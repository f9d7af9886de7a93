"""DeclareMiningJob validation: pure, synchronous, no I/O (the server resolves transactions and
the chain tip first, then calls :func:`validate_declaration`).

Checks, in order, each with its own error code (docs/jds.md lists them all):

1. coinbase reconstruction as SRI's JDS does (sv2-apps ``job_validation``): the coinbase is
   ``prefix || zeros(extranonce_len) || suffix`` in *segwit* serialization (sv2-spec §3.7.2
   keeps marker, flag and witness); the scriptSig length is read at the fixed offset 43
   (version 4 + marker/flag 2 + input count 1 + outpoint 36) and the extranonce length is that
   length minus the scriptSig bytes already in the prefix, i.e. the extranonce ends the
   scriptSig. Undecodable -> ``invalid-coinbase-tx``; not exactly one input, or not a coinbase
   input -> ``invalid-coinbase-tx-input``;
2. BIP-34: the scriptSig starts with ``CScript() << (tip height + 1)`` -> else
   ``stale-chain-tip`` (SRI maps ``bad-cb-height`` to it);
3. the wtxid list: no repeats (``duplicate-wtxid``), at most 4,000,000 / 240 entries
   (``too-many-transactions``) -- SRI v32x hardening;
4. (server: every wtxid resolved, else ProvideMissingTransactions)
5. block limits: weight <= 4,000,000 (``block-weight-exceeded``), sigop cost <= 80,000
   (``block-sigops-exceeded``);
6. BIP-141: the last output is the witness commitment, the coinbase witness is one 32-byte
   reserved value, and the commitment matches the declared wtxids
   (``invalid-witness-commitment``);
7. revenue T (rule below, ``invalid-coinbase-value``);
8. outputs: the first ones equal the expected outputs for T byte for byte, everything after
   them is 0-valued (PR #203 §4 positions 4-5) -- the code comes from the payout rule in force.

Revenue rule: when the fee of every declared transaction is known (from the node's block
template, or computed from inputs that spend outputs of transactions we hold), T = subsidy +
Σ fees and the coinbase must pay exactly T. Otherwise T is the coinbase's total output value,
which must be at least subsidy + Σ known fees (paying less would silently burn fees the payees
share in); that it does not exceed the real subsidy + fees is then left to consensus when the
block is submitted (``bad-cb-amount``).

Sigop rule: a transaction from the node's template counts its exact sigop cost; any other
counts 4 × its legacy sigops (P2SH and witness sigops need the spent outputs); the kernel /
bitcoind check the exact cost at submission.
"""

from __future__ import annotations

import hashlib
import operator
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from payouts.errors import ValidationError
from payouts.tx.coinbase import WITNESS_COMMITMENT_HEADER
from payouts.tx.compact import compact_size_len, read_compact_size
from payouts.tx.consensus import MAX_BLOCK_SIGOPS_COST, MAX_BLOCK_TXS, MAX_BLOCK_WEIGHT
from payouts.tx.hashes import sha256d
from payouts.tx.output_scripts import legacy_sigops, sigop_cost
from payouts.tx.script import bip34_height
from payouts.tx.transaction import Tx, TxDecodeError
from payouts.tx.txout import TxOut
from sv2.declared_job import DeclaredCoinbase, KnownTx
from sv2.jds import errors as E
from sv2.jds.errors import JobRejected
from sv2.payout_check import PayoutRule, check_payout_outputs

MAX_WTXIDS = MAX_BLOCK_TXS  # 16,666
HEADER_WEIGHT = 4 * 80
SCRIPT_SIG_LEN_OFFSET = 43  # 4 version + 2 marker/flag + 1 input count + 36 outpoint
MAX_EXTRANONCE = 32  # PushSolution.extranonce is B0_32


def parse_declared_coinbase(prefix: bytes, suffix: bytes) -> DeclaredCoinbase:
    """Check 1 (see the module docstring)."""
    if len(prefix) < SCRIPT_SIG_LEN_OFFSET + 1:
        raise JobRejected(E.INVALID_COINBASE_TX, f"coinbase_tx_prefix is only {len(prefix)} bytes")
    if prefix[4:6] != b"\x00\x01":
        raise JobRejected(
            E.INVALID_COINBASE_TX,
            "coinbase_tx_prefix must keep the BIP-141 marker and flag (sv2-spec §3.7.2)",
        )
    if prefix[6] != 1:
        raise JobRejected(E.INVALID_COINBASE_TX_INPUT, f"coinbase has {prefix[6]} inputs, not 1")
    try:
        script_len, after = read_compact_size(prefix, SCRIPT_SIG_LEN_OFFSET)
    except (ValueError, IndexError, ValidationError):
        raise JobRejected(E.INVALID_COINBASE_TX, "unreadable scriptSig length") from None
    extranonce = script_len - (len(prefix) - after)
    if not 0 <= extranonce <= MAX_EXTRANONCE:
        raise JobRejected(
            E.INVALID_COINBASE_TX,
            f"extranonce length {extranonce} (scriptSig {script_len} bytes, "
            f"{len(prefix) - after} in the prefix) is not in 0..{MAX_EXTRANONCE}",
        )
    try:
        tx = Tx.parse(prefix + bytes(extranonce) + suffix)
    except (TxDecodeError, ValueError) as exc:
        raise JobRejected(E.INVALID_COINBASE_TX, f"coinbase does not decode: {exc}") from None
    if len(tx.inputs) != 1 or not tx.is_coinbase:
        raise JobRejected(E.INVALID_COINBASE_TX_INPUT, "the input is not a coinbase input")
    if not 2 <= len(tx.inputs[0].script_sig) <= 100:
        raise JobRejected(E.INVALID_COINBASE_TX, "coinbase scriptSig must be 2..100 bytes")
    if not tx.outputs:
        raise JobRejected(E.INVALID_COINBASE_TX, "coinbase has no outputs")
    return DeclaredCoinbase(tx, bytes(prefix), bytes(suffix), extranonce)


def check_height(coinbase: DeclaredCoinbase, tip_height: int) -> int:
    """Check 2: returns the block height."""
    height = tip_height + 1
    if not coinbase.tx.inputs[0].script_sig.startswith(bip34_height(height)):
        raise JobRejected(
            E.STALE_CHAIN_TIP, f"coinbase height is not {height} (our tip is {tip_height})"
        )
    return height


def check_wtxid_list(wtxids: Sequence[bytes]) -> None:
    """Check 3."""
    if len(wtxids) > MAX_WTXIDS:
        raise JobRejected(
            E.TOO_MANY_TRANSACTIONS, f"{len(wtxids)} wtxids; a block holds at most {MAX_WTXIDS}"
        )
    if len(set(wtxids)) != len(wtxids):
        raise JobRejected(E.DUPLICATE_WTXID, "wtxid_list repeats an entry")


def _common_prefix_nodes(a: bytes, b: bytes) -> int:
    """How many leading 32-byte nodes ``a`` and ``b`` share (memcmp-speed slice compares, a
    binary search over the differing region)."""
    n = min(len(a), len(b)) // 32
    if a[: 32 * n] == b[: 32 * n]:
        return n
    lo, hi = 0, n  # the first lo nodes are equal; the first hi are not all equal
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[32 * lo : 32 * mid] == b[32 * lo : 32 * mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _build_levels(leaves: bytes, base: Sequence[bytes] | None) -> tuple[list[bytes], int]:
    """Every level of the BIP-141 witness tree over ``leaves`` (concatenated 32-byte nodes,
    the coinbase's zero wtxid first), each level one bytes object *before* the odd-length
    duplication of Core's ``ComputeMerkleRoot``.

    ``base``: the levels of another tree. A node of level L+1 depends only on its two children,
    so when the first ``c`` leaves equal ``base``'s, the first ``c // 2`` nodes of the next
    level equal ``base``'s too (both children are real nodes in both trees, not duplicates),
    and so on up: those are copied, only the rest is hashed. Exact by construction. Returns the
    levels and the number of nodes hashed."""
    sha = hashlib.sha256
    levels = [leaves]
    hashed = 0
    same = _common_prefix_nodes(leaves, base[0]) if base else 0
    if base and 32 * same == len(leaves) == len(base[0]):
        return list(base), 0  # the same leaves: the same tree
    level = leaves
    depth = 0
    while len(level) > 32:
        depth += 1
        same //= 2
        keep = base[depth][: 32 * same] if base is not None and depth < len(base) else b""
        if len(keep) != 32 * same:
            same, keep = 0, b""
        if (len(level) // 32) & 1:
            level += level[-32:]
        fresh = [
            sha(sha(level[i : i + 64]).digest()).digest() for i in range(64 * same, len(level), 64)
        ]
        hashed += len(fresh)
        level = keep + b"".join(fresh)
        levels.append(level)
    return levels, hashed


class WitnessTrees:
    """Witness merkle trees the server has built, reused by content: the tree of the node's
    current block template (built when the template is loaded, :meth:`set_template`) and the
    last few declared ones. A declaration whose wtxid list starts like one of them (a JD client
    on a node with the same mempool declares the same transactions in the same, ancestor-feerate,
    order; a re-declaration after a new distribution repeats its list) hashes only the part
    after the common prefix; an identical list costs one dict look-up. The root is always that
    of ``payouts.tx.merkle`` (tests compare both): only equal preimages are reused."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.template: list[bytes] | None = None
        self._recent: OrderedDict[bytes, list[bytes]] = OrderedDict()
        self.hashed_nodes = 0  # nodes hashed so far (benchmarks and tests read it)

    def clear(self) -> None:
        self.template = None
        self._recent.clear()

    def forget_recent(self) -> None:
        """Drop the declared trees, keep the template's (what a benchmark's "cold" means)."""
        self._recent.clear()

    def set_template(self, wtxids: Sequence[bytes]) -> None:
        self.install_template(*self.build_template(wtxids))

    def build_template(self, wtxids: Sequence[bytes]) -> tuple[list[bytes], int]:
        """The levels of the template tree over ``wtxids`` (reusing the current template's
        where they share a prefix) and the nodes hashed, without installing them. Reads only
        immutable state, so it may run in a worker thread while the event loop serves
        declarations; :meth:`install_template` then swaps the result in."""
        return _build_levels(_leaves(wtxids), self.template)

    def install_template(self, levels: list[bytes], hashed: int) -> None:
        self.template = levels
        self.hashed_nodes += hashed

    def root(self, wtxids: Sequence[bytes]) -> bytes:
        leaves = _leaves(wtxids)
        levels = self._recent.get(leaves)
        if levels is not None:
            self._recent.move_to_end(leaves)
            return levels[-1]
        best, best_n = self.template, -1
        for cand in (self.template, *self._recent.values()):
            if cand is not None:
                n = _common_prefix_nodes(leaves, cand[0])
                if n > best_n:
                    best, best_n = cand, n
        levels = self._build(leaves, best)
        self._recent[leaves] = levels
        while len(self._recent) > self.keep:
            self._recent.popitem(last=False)
        return levels[-1]

    def _build(self, leaves: bytes, base: list[bytes] | None) -> list[bytes]:
        levels, hashed = _build_levels(leaves, base)
        self.hashed_nodes += hashed
        return levels


def _leaves(wtxids: Sequence[bytes]) -> bytes:
    # The coinbase's wtxid is defined as zero (BIP-141).
    return b"".join((bytes(32), *wtxids))


def witness_root(wtxids: Sequence[bytes], trees: WitnessTrees | None = None) -> bytes:
    """BIP-141 witness merkle root of a block whose non-coinbase wtxids are ``wtxids``."""
    if trees is None:
        return _build_levels(_leaves(wtxids), None)[0][-1]
    return trees.root(wtxids)


_WEIGHT = operator.attrgetter("weight")
_SIGOPS = operator.attrgetter("sigops")
_FEE = operator.attrgetter("fee")
_WTXID = operator.attrgetter("wtxid")


@dataclass(frozen=True, slots=True)
class ValidatedDeclaration:
    coinbase: DeclaredCoinbase
    height: int
    revenue: int  # T
    fees_known: bool
    payout_outputs: tuple[TxOut, ...]
    weight: int
    sigops: int


def validate_declaration(
    coinbase: DeclaredCoinbase,
    txs: Sequence[KnownTx],
    *,
    height: int,
    subsidy: int,
    rule: PayoutRule,
    trees: WitnessTrees | None = None,
) -> ValidatedDeclaration:
    """Checks 5-8 on a parsed coinbase (checks 1-2 done) and its resolved transactions, in
    ``wtxid_list`` order. ``trees``: the server's witness-tree cache (see
    :class:`WitnessTrees`); without it the root is computed from scratch. Raises
    :class:`JobRejected`."""
    cb = coinbase.tx
    # 5. limits (per-tx weight, sigops and fee were computed when the tx entered the store)
    weight = HEADER_WEIGHT + 4 * compact_size_len(len(txs) + 1) + coinbase.weight
    weight += sum(map(_WEIGHT, txs))
    # = 4 × Tx.legacy_sigops(), with sigop_cost's fast path for standard payout scripts
    sigops = 4 * legacy_sigops(cb.inputs[0].script_sig)
    sigops += sum([sigop_cost(o.script) for o in cb.outputs]) + sum(map(_SIGOPS, txs))
    tx_fees = list(map(_FEE, txs))
    fees_known = None not in tx_fees
    fees = sum(tx_fees) if fees_known else sum(f for f in tx_fees if f is not None)
    if weight > MAX_BLOCK_WEIGHT:
        raise JobRejected(E.BLOCK_WEIGHT_EXCEEDED, f"block weight {weight} > {MAX_BLOCK_WEIGHT}")
    if sigops > MAX_BLOCK_SIGOPS_COST:
        raise JobRejected(
            E.BLOCK_SIGOPS_EXCEEDED, f"block sigop cost {sigops} > {MAX_BLOCK_SIGOPS_COST}"
        )
    # 6. witness commitment: last output, one 32-byte reserved value, right hash
    outputs = cb.outputs
    last = outputs[-1]
    if len(last.script) < 38 or last.script[:6] != WITNESS_COMMITMENT_HEADER:
        raise JobRejected(E.INVALID_WITNESS_COMMITMENT, "the last output is not the commitment")
    witness = cb.inputs[0].witness
    if len(witness) != 1 or len(witness[0]) != 32:
        raise JobRejected(
            E.INVALID_WITNESS_COMMITMENT, "coinbase witness must be one 32-byte reserved value"
        )
    root = witness_root(list(map(_WTXID, txs)), trees)
    if last.script[6:38] != sha256d(root + witness[0]):
        raise JobRejected(
            E.INVALID_WITNESS_COMMITMENT, "witness commitment does not match the declared wtxids"
        )
    # 7. revenue
    paid = 0
    for o in outputs:
        paid += o.value
    available = subsidy + fees
    if fees_known and paid != available:
        raise JobRejected(
            E.INVALID_COINBASE_VALUE,
            f"coinbase pays {paid} sat; subsidy + fees of the declared txs is {available}",
        )
    if not fees_known and paid < available:
        raise JobRejected(
            E.INVALID_COINBASE_VALUE,
            f"coinbase pays {paid} sat, less than subsidy + known fees ({available})",
        )
    revenue = paid
    # 8. outputs: expected ones first, byte for byte; then only 0-value outputs
    expected = check_payout_outputs(outputs, revenue, rule)
    return ValidatedDeclaration(coinbase, height, revenue, fees_known, expected, weight, sigops)


__all__ = [
    "MAX_WTXIDS",
    "DeclaredCoinbase",
    "KnownTx",
    "PayoutRule",
    "ValidatedDeclaration",
    "WitnessTrees",
    "check_height",
    "check_wtxid_list",
    "parse_declared_coinbase",
    "validate_declaration",
    "witness_root",
]
