"""The ``coinbase`` settlement mode: the distribution's outputs are coinbase outputs.

Output order is that of sv2-spec PR #203 §5: the distribution's outputs in wire order (pool
payout, payees, additional outputs), then the Template Provider's own outputs, the BIP-141
witness commitment last. The distribution's outputs must fit the budget announced in
``CoinbaseOutputConstraints`` (bytes and sigop cost); optionally the whole coinbase must fit one
of the size classes mining firmware accepts (DATUM Gateway's classes: 500 / 755 / 2,250 / 6,500 /
16,000 bytes of non-witness coinbase, the form stratum v1 firmware receives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.distribution.amounts import PayoutResult, compute_outputs
from payouts.distribution.fitting import Budget
from payouts.distribution.model import Distribution
from payouts.errors import BudgetTooSmallError
from payouts.tx.coinbase import (
    WITNESS_RESERVED_VALUE,
    CoinbaseParts,
    build_coinbase_parts,
    coinbase_script_sig_prefix,
    witness_commitment_output,
)
from payouts.tx.compact import compact_size_len
from payouts.tx.output_scripts import sigop_cost
from payouts.tx.txout import TxOut

SIZE_CLASSES: dict[str, int] = {
    "nicehash": 500,
    "antminer": 755,
    "antminer2": 2_250,
    "whatsminer": 6_500,
    "yuge": 16_000,
}
WITNESS_COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")


@dataclass(frozen=True, slots=True)
class CoinbaseSettlement:
    parts: CoinbaseParts
    payout: PayoutResult
    outputs: tuple[TxOut, ...]  # every coinbase output in order (commitment last)
    stripped_size: int  # non-witness size with the extranonce: what firmware receives
    weight: int
    sigops: int  # sigop cost of the distribution's outputs


def split_template_outputs(outputs: Sequence[TxOut]) -> tuple[list[TxOut], bytes | None]:
    """Separate a template's witness commitment (which must stay last and needs the
    reserved-value witness) from its other outputs."""
    rest = list(outputs)
    if rest and rest[-1].script[:6] == WITNESS_COMMITMENT_HEADER and len(rest[-1].script) >= 38:
        return rest[:-1], rest[-1].script[6:38]
    return rest, None


def stripped_overhead(
    height: int, *, tag: bytes, extranonce_size: int, n_outputs: int, fixed: Sequence[TxOut]
) -> int:
    """Non-witness bytes of a coinbase other than the distribution's outputs: version,
    input, output count, the ``fixed`` outputs (template's, commitment included), locktime."""
    script_len = len(coinbase_script_sig_prefix(height, tag, extranonce_size)) + extranonce_size
    inp = 36 + compact_size_len(script_len) + script_len + 4
    return 4 + 1 + inp + compact_size_len(n_outputs) + sum(o.size for o in fixed) + 4


def outputs_budget_for_size_class(
    size_cap: int,
    height: int,
    *,
    tag: bytes = b"",
    extranonce_size: int = 8,
    template_outputs: Sequence[TxOut] = (),
    max_outputs: int = 252,
) -> int:
    """Bytes left for the distribution's outputs in a coinbase capped at ``size_cap``."""
    fixed = list(template_outputs)
    overhead = stripped_overhead(
        height, tag=tag, extranonce_size=extranonce_size,
        n_outputs=max_outputs + len(fixed), fixed=fixed,
    )
    budget = size_cap - overhead
    if budget <= 0:
        raise BudgetTooSmallError(
            f"a {size_cap}-byte coinbase has no room for payout outputs (overhead {overhead})"
        )
    return budget


def build_coinbase_settlement(
    distribution: Distribution,
    revenue: int,
    *,
    height: int,
    template_outputs: Sequence[TxOut] = (),
    budget: Budget | None = None,
    size_cap: int | None = None,
    extranonce_size: int = 8,
    tag: bytes = b"",
    version: int = 2,
    locktime: int = 0,
    sequence: int = 0xFFFFFFFF,
    script_prefix: bytes | None = None,
    witness_reserved: bytes = WITNESS_RESERVED_VALUE,
) -> CoinbaseSettlement:
    """Build the coinbase for ``distribution`` at revenue ``revenue`` (the template's
    ``coinbase_tx_value_remaining``). ``template_outputs`` are the Template Provider's outputs
    (``NewTemplate.coinbase_tx_outputs``, witness commitment last), carried unchanged;
    ``script_prefix`` / ``witness_reserved``: its ``coinbase_prefix`` and witness reserved
    value (:func:`~payouts.tx.coinbase.build_coinbase_parts`)."""
    payout = compute_outputs(distribution, revenue)
    ours = payout.outputs
    size = sum(o.size for o in ours)
    sigops = sum(sigop_cost(o.script) for o in ours)
    if budget is not None and (size > budget.max_bytes or sigops > budget.max_sigops):
        raise BudgetTooSmallError(
            f"the distribution's outputs take {size} bytes and {sigops} sigops; the budget is "
            f"{budget.max_bytes} bytes and {budget.max_sigops} sigops",
            code="coinbase-budget-exceeded",
        )
    others, commitment = split_template_outputs(template_outputs)
    parts = build_coinbase_parts(
        height, [*ours, *others], extranonce_size=extranonce_size, tag=tag,
        commitment=commitment, version=version, locktime=locktime, sequence=sequence,
        script_prefix=script_prefix, witness_reserved=witness_reserved,
    )
    outputs = (*ours, *others)
    if commitment is not None:
        outputs = (*outputs, witness_commitment_output(commitment))
    stripped = len(parts.stripped_prefix) + extranonce_size + len(parts.stripped_suffix)
    total = len(parts.prefix) + extranonce_size + len(parts.suffix)
    if size_cap is not None and stripped > size_cap:
        raise BudgetTooSmallError(
            f"the coinbase is {stripped} bytes; the firmware size class allows {size_cap}",
            code="coinbase-size-class-exceeded",
        )
    return CoinbaseSettlement(
        parts=parts,
        payout=payout,
        outputs=outputs,
        stripped_size=stripped,
        weight=3 * stripped + total,
        sigops=sigops,
    )
