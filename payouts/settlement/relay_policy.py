"""Bitcoin Core relay policy that the relayed transactions of the ``ctv`` and ``musig2``
settlement modes must meet (docs/extensions/0x4003-settlement-modes.md §5).

A coinbase is never relayed, so PR #203 lets its outputs be as small as the pool likes. The
fan-out txs of ``ctv`` and the payout tx of ``musig2`` are relayed, so both modes raise every
payee's dust limit to Core's relay dust threshold (:func:`relay_dust`) and refuse leaf scripts
whose sigops could make Core's sigop-adjusted size or its per-tx sigop limit bind
(:func:`first_sigop_dense`). With that rule a tx's policy vsize is exactly ⌈weight / 4⌉, which
is what every fee and size limit of both modes is computed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.tx.output_scripts import dust_limit, output_costs, output_size, sigop_cost

MAX_STANDARD_TX_WEIGHT = 400_000  # Core policy/policy.h
MAX_STANDARD_TX_SIGOPS_COST = 16_000  # Core policy/policy.h: MAX_BLOCK_SIGOPS_COST / 5
DEFAULT_BYTES_PER_SIGOP = 20  # Core policy/policy.h: sigop-adjusted size, GetVirtualTransactionSize
TRUC_VERSION = 3  # BIP-431; Core policy/truc_policy.h
TRUC_MAX_VSIZE = 10_000  # Core TRUC_MAX_VSIZE
MIN_STANDARD_TX_NONWITNESS_SIZE = 65  # Core policy/policy.h (64-byte txs confuse SPV proofs)
WITNESS_SCALE_FACTOR = 4
# A leaf script may carry at most one sigop cost unit per SIGOP_DENSITY weight units of its own
# output: then a tx's sigop cost is at most weight / 25 ≤ 16,000 at 400,000 WU, and
# 20 × sigop cost ≤ 0.8 × weight, so the sigop-adjusted size never exceeds the weight.
SIGOP_DENSITY = 25
assert MAX_STANDARD_TX_WEIGHT // SIGOP_DENSITY <= MAX_STANDARD_TX_SIGOPS_COST
assert DEFAULT_BYTES_PER_SIGOP < SIGOP_DENSITY


def relay_dust(dist: Distribution) -> Distribution:
    """``dist`` with every payee's dust limit raised to at least Core's ``GetDustThreshold``
    of its script at 3 sat/vB (:func:`~payouts.tx.output_scripts.dust_limit`): outputs of a
    relayed tx below it make the tx non-standard (only a 0-value P2A anchor may be dust).

    The threshold depends only on the script's length and its first two bytes, so it is
    computed once per such key: 100,000 payees cost a dict lookup each."""
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


def sigop_dense(script: bytes) -> bool:
    """Whether ``script``'s sigop cost (legacy sigops × 4) exceeds one unit per
    :data:`SIGOP_DENSITY` weight units of its output (8 + CompactSize + script bytes, × 4).
    True for bare multisig; false for every address type (P2PKH: 4 × 25 = 100 ≤ 4 × 34)."""
    return sigop_cost(script) * SIGOP_DENSITY > WITNESS_SCALE_FACTOR * output_size(script)


def first_sigop_dense(scripts: Sequence[bytes]) -> int | None:
    """Index of the first script of ``scripts`` that :func:`sigop_dense` refuses, or None
    (vectorised: the common templates are recognised on all scripts at once)."""
    sizes, sigops, _ = output_costs(scripts)
    dense = np.flatnonzero(sigops * SIGOP_DENSITY > WITNESS_SCALE_FACTOR * sizes)
    return int(dense[0]) if len(dense) else None


def refuse_sigop_dense(scripts: Sequence[bytes], error: type[ValidationError]) -> None:
    """Raise ``error`` naming the first sigop-dense script of ``scripts`` (spec §4.3: one sigop
    cost unit per 25 WU of output at most, so Core's sigop-adjusted size and its sigop limit
    never bind and ``fee = rate × vsize`` is the feerate Core sees)."""
    dense = first_sigop_dense(scripts)
    if dense is not None:
        raise error(
            f"script {scripts[dense].hex()} has more than one sigop cost unit per "
            f"{SIGOP_DENSITY} WU of its output: Core's sigop-adjusted size or sigop limit "
            "could bind"
        )


__all__ = [
    "DEFAULT_BYTES_PER_SIGOP",
    "MAX_STANDARD_TX_SIGOPS_COST",
    "MAX_STANDARD_TX_WEIGHT",
    "MIN_STANDARD_TX_NONWITNESS_SIZE",
    "SIGOP_DENSITY",
    "TRUC_MAX_VSIZE",
    "TRUC_VERSION",
    "WITNESS_SCALE_FACTOR",
    "first_sigop_dense",
    "refuse_sigop_dense",
    "relay_dust",
    "sigop_dense",
]
