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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from payouts.distribution.model import TxOut
from payouts.errors import ValidationError
from payouts.tx.coinbase import WITNESS_COMMITMENT_HEADER
from payouts.tx.compact import compact_size_len, read_compact_size
from payouts.tx.hashes import sha256d
from payouts.tx.script import bip34_height
from payouts.tx.transaction import Tx, TxDecodeError
from sv2.jds import errors as E
from sv2.jds.errors import JobRejected

MAX_BLOCK_WEIGHT = 4_000_000
MAX_BLOCK_SIGOPS_COST = 80_000
MIN_TRANSACTION_WEIGHT = 4 * 60  # Core consensus/consensus.h
MAX_WTXIDS = MAX_BLOCK_WEIGHT // MIN_TRANSACTION_WEIGHT  # 16,666
HEADER_WEIGHT = 4 * 80
SCRIPT_SIG_LEN_OFFSET = 43  # 4 version + 2 marker/flag + 1 input count + 36 outpoint
MAX_EXTRANONCE = 32  # PushSolution.extranonce is B0_32


@dataclass(slots=True)
class KnownTx:
    """A transaction the server can put in a block, with what validation needs precomputed."""

    tx: Tx
    txid: bytes
    wtxid: bytes
    weight: int
    sigops: int  # sigop cost: exact for template txs, else 4 × legacy (a lower bound)
    fee: int | None  # None: not known

    @classmethod
    def of(cls, tx: Tx, *, fee: int | None = None, sigops: int | None = None) -> KnownTx:
        return cls(
            tx,
            tx.txid,
            tx.wtxid,
            tx.weight,
            4 * tx.legacy_sigops() if sigops is None else sigops,
            fee,
        )


@dataclass(frozen=True, slots=True)
class DeclaredCoinbase:
    """A declared coinbase with the extranonce zeroed."""

    tx: Tx
    prefix: bytes
    suffix: bytes
    extranonce_size: int

    def with_extranonce(self, extranonce: bytes) -> bytes:
        if len(extranonce) != self.extranonce_size:
            raise ValidationError(
                f"extranonce is {len(extranonce)} bytes, the job reserves {self.extranonce_size}"
            )
        return self.prefix + extranonce + self.suffix


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


def _witness_merkle_root_uncached(wtxids: Sequence[bytes]) -> bytes:
    """payouts.tx.merkle.witness_merkle_root with hashlib bound locally and pairs zipped."""
    sha = hashlib.sha256
    level = [bytes(32), *wtxids]
    while len(level) > 1:
        if len(level) & 1:
            level.append(level[-1])
        pairs = zip(level[::2], level[1::2], strict=True)  # even length by now
        level = [sha(sha(a + b).digest()).digest() for a, b in pairs]
    return level[0]


_ROOTS: OrderedDict[bytes, bytes] = OrderedDict()
ROOT_CACHE_SIZE = 64


def _witness_merkle_root(wtxids: Sequence[bytes]) -> bytes:
    """The witness merkle root, memoised on the exact wtxid list: at 4,000 transactions it is
    the most expensive step of a declaration (~4,000 SHA256d), and JD clients re-declare the
    same transaction set (a new token, a new distribution under PR #203 §4)."""
    key = b"".join(wtxids)
    root = _ROOTS.get(key)
    if root is None:
        root = _witness_merkle_root_uncached(wtxids)
        _ROOTS[key] = root
        if len(_ROOTS) > ROOT_CACHE_SIZE:
            _ROOTS.popitem(last=False)
    else:
        _ROOTS.move_to_end(key)
    return root


def clear_caches() -> None:
    _ROOTS.clear()


@dataclass(frozen=True, slots=True)
class PayoutRule:
    """What the first coinbase outputs must be, given T; ``code`` is the rejection code when
    they are not (``invalid-pool-payout``, ``invalid-payout-distribution``,
    ``invalid-settlement-outputs`` or ``invalid-payout-outputs``). ``fixed_revenue``: the T a
    PR #202 output set was computed for (the declared T must equal it)."""

    code: str
    expected: Callable[[int], Sequence[TxOut]]
    description: str
    fixed_revenue: int | None = None


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
) -> ValidatedDeclaration:
    """Checks 5-8 on a parsed coinbase (checks 1-2 done) and its resolved transactions, in
    ``wtxid_list`` order. Raises :class:`JobRejected`."""
    cb = coinbase.tx
    # 5. limits
    weight = HEADER_WEIGHT + 4 * compact_size_len(len(txs) + 1) + cb.weight
    sigops = 4 * cb.legacy_sigops()
    fees = 0
    fees_known = True
    for k in txs:
        weight += k.weight
        sigops += k.sigops
        if k.fee is None:
            fees_known = False
        else:
            fees += k.fee
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
    root = _witness_merkle_root([k.wtxid for k in txs])
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
    if rule.fixed_revenue is not None and revenue != rule.fixed_revenue:
        raise JobRejected(
            rule.code,
            f"outputs were requested for {rule.fixed_revenue} sat; the coinbase pays {revenue}",
        )
    # 8. outputs: expected ones first, byte for byte; then only 0-value outputs
    try:
        expected = tuple(rule.expected(revenue))
    except ValidationError as exc:
        raise JobRejected(rule.code, f"{rule.description}: {exc.message}") from None
    n = len(expected)
    if len(outputs) < n + 1:
        raise JobRejected(
            rule.code,
            f"{rule.description}: expected {n} outputs before the others, got {len(outputs) - 1}",
        )
    for i in range(n):
        if outputs[i] != expected[i]:
            raise JobRejected(
                rule.code,
                f"{rule.description}: output {i} is {outputs[i].value} sat to "
                f"{outputs[i].script.hex()}, expected {expected[i].value} sat to "
                f"{expected[i].script.hex()}",
            )
    for i in range(n, len(outputs)):
        if outputs[i].value != 0:
            raise JobRejected(
                rule.code,
                f"{rule.description}: output {i} carries {outputs[i].value} sat; outputs after "
                "the payout outputs must be 0-valued",
            )
    return ValidatedDeclaration(coinbase, height, revenue, fees_known, expected, weight, sigops)


__all__ = [
    "MAX_BLOCK_SIGOPS_COST",
    "MAX_BLOCK_WEIGHT",
    "MAX_WTXIDS",
    "DeclaredCoinbase",
    "KnownTx",
    "PayoutRule",
    "ValidatedDeclaration",
    "check_height",
    "check_wtxid_list",
    "parse_declared_coinbase",
    "validate_declaration",
]
