"""The coinbase a JD client declares (and the pool builds for its own jobs), per settlement mode,
and the job built around it; below the roles: the JD client declares it, the Mining Protocol
server gives it to miners that do not declare.

Determinism (ARCHITECTURE invariant 3): the payout outputs come from the *same functions the
JD server validates with*, so both sides produce the same bytes for the same distribution and T:

- ``coinbase`` mode: :func:`payouts.settlement.coinbase.build_coinbase_settlement` (whose
  outputs are :func:`payouts.distribution.compute_outputs`, the PR #203 §5 math);
- ``ctv`` / ``musig2``: :func:`payouts.settlement.modes.default_expected_outputs` (the
  server's rule, rebuilt from SetSettlementMode alone) or the caller's ``expected_outputs``
  override;
- per-job adapter (extension 0x4002, sv2-spec PR #202): the outputs the server returned.

Output order (PR #203 §5): payout outputs, then the template's outputs with the BIP-141 witness
commitment last. The coinbase is always segwit-serialized with the template's 32-byte witness
reserved value as its witness (zeros from a node; sv2-tp's ``excess_data``): DeclareMiningJob
keeps the BIP-141 fields (sv2-spec §3.7.2), and the JDS reads the scriptSig length at offset 43,
which assumes the marker and flag. The scriptSig starts with the template's
``NewTemplate.coinbase_prefix`` as sent (§7.2), the BIP-34 height push for a node's template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payouts.distribution.amounts import PayoutResult
from payouts.distribution.fitting import Budget
from payouts.distribution.model import Distribution
from payouts.errors import ValidationError
from payouts.settlement.coinbase import build_coinbase_settlement, split_template_outputs
from payouts.settlement.modes import ExpectedOutputs, SettlementMode, default_expected_outputs
from payouts.tx.coinbase import CoinbaseParts, build_coinbase_parts, witness_commitment_output
from payouts.tx.compact import read_compact_size, ser_compact_size
from payouts.tx.txout import TxOut
from sv2.template import JobTemplate, read_txouts

DEFAULT_TAG = b"/payouts-jdc/"
DEFAULT_EXTRANONCE_SIZE = 8


@dataclass(frozen=True, slots=True)
class JobCoinbase:
    """A coinbase split around its extranonce, with the payout outputs it starts with."""

    parts: CoinbaseParts
    payout_outputs: tuple[TxOut, ...]  # what the JDS recomputes and compares
    outputs: tuple[TxOut, ...]  # every output, witness commitment last
    mode: str  # "coinbase" | "ctv" | "musig2" | "per-job" | "solo"
    distribution_id: int | None
    payout: PayoutResult | None = None  # coinbase mode: amounts, pruned payees

    @property
    def prefix(self) -> bytes:
        return self.parts.prefix

    @property
    def suffix(self) -> bytes:
        return self.parts.suffix


def _assemble(
    template: JobTemplate,
    payout_outputs: Sequence[TxOut],
    *,
    mode: str,
    distribution_id: int | None,
    extranonce_size: int,
    tag: bytes,
) -> JobCoinbase:
    others, commitment = split_template_outputs(template.outputs)
    outputs = [*payout_outputs, *others]
    parts = build_coinbase_parts(
        template.height,
        outputs,
        extranonce_size=extranonce_size,
        tag=tag,
        commitment=commitment,
        version=template.coinbase_version,
        locktime=template.coinbase_locktime,
        sequence=template.coinbase_sequence,
        script_prefix=template.script_prefix,
        witness_reserved=template.witness_reserved,
    )
    full = (*outputs, witness_commitment_output(commitment)) if commitment else tuple(outputs)
    return JobCoinbase(parts, tuple(payout_outputs), full, mode, distribution_id)


def build_job_coinbase(
    distribution: Distribution,
    template: JobTemplate,
    mode: SettlementMode | None = None,
    *,
    expected_outputs: ExpectedOutputs | None = None,
    budget: Budget | None = None,
    extranonce_size: int = DEFAULT_EXTRANONCE_SIZE,
    tag: bytes = DEFAULT_TAG,
) -> JobCoinbase:
    """The coinbase for ``distribution`` at the template's revenue T, in ``mode`` (default
    ``coinbase``). ``expected_outputs`` overrides the mode rule exactly as the server's
    ``expected_outputs`` callable does."""
    m = mode or SettlementMode("coinbase")
    if m.name == "coinbase" and expected_outputs is None:
        s = build_coinbase_settlement(
            distribution,
            template.revenue,
            height=template.height,
            template_outputs=template.outputs,
            budget=budget,
            extranonce_size=extranonce_size,
            tag=tag,
            version=template.coinbase_version,
            locktime=template.coinbase_locktime,
            sequence=template.coinbase_sequence,
            script_prefix=template.script_prefix,
            witness_reserved=template.witness_reserved,
        )
        return JobCoinbase(
            s.parts,
            s.payout.outputs,
            s.outputs,
            "coinbase",
            distribution.distribution_id,
            s.payout,
        )
    rule = expected_outputs or default_expected_outputs
    outs = tuple(rule(m, distribution, template.revenue))
    return _assemble(
        template,
        outs,
        mode=m.name,
        distribution_id=distribution.distribution_id,
        extranonce_size=extranonce_size,
        tag=tag,
    )


def build_outputs_coinbase(
    outputs: Sequence[TxOut],
    template: JobTemplate,
    *,
    mode: str = "per-job",
    extranonce_size: int = DEFAULT_EXTRANONCE_SIZE,
    tag: bytes = DEFAULT_TAG,
) -> JobCoinbase:
    """A coinbase paying given outputs first (the per-job adapter's RequestPayoutOutputs
    .Success set, or a solo miner's own output), then the template's outputs."""
    paid = sum(o.value for o in outputs)
    if paid != template.revenue:
        raise ValidationError(
            f"the outputs pay {paid} sat; the template distributes {template.revenue}",
            code="invalid-payout-outputs",
        )
    return _assemble(
        template,
        outputs,
        mode=mode,
        distribution_id=None,
        extranonce_size=extranonce_size,
        tag=tag,
    )


def parse_output_vector(raw: bytes) -> tuple[TxOut, ...]:
    """A CompactSize-prefixed vector of TxOuts (RequestPayoutOutputs.Success and
    AllocateMiningJobToken.Success ``coinbase_tx_outputs``, reference/sv2.md §1.6)."""
    try:
        n, pos = read_compact_size(raw, 0)
        out, pos = read_txouts(raw, pos, n)
    except ValueError as exc:
        raise ValidationError(
            f"coinbase_tx_outputs: {exc}", code="invalid-payout-outputs"
        ) from None
    if pos != len(raw):
        raise ValidationError(
            f"coinbase_tx_outputs: {len(raw) - pos} trailing bytes", code="invalid-payout-outputs"
        )
    return tuple(out)


def serialize_output_vector(outputs: Sequence[TxOut]) -> bytes:
    return ser_compact_size(len(outputs)) + b"".join(o.serialize() for o in outputs)


__all__ = [
    "DEFAULT_EXTRANONCE_SIZE",
    "DEFAULT_TAG",
    "JobCoinbase",
    "build_job_coinbase",
    "build_outputs_coinbase",
    "parse_output_vector",
    "serialize_output_vector",
]
