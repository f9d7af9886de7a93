"""Recompute-and-compare of a coinbase's payout outputs (sv2-spec PR #203 §5, §7), below the
roles: the JD server runs it on every ``DeclareMiningJob`` (Full-Template mode,
:func:`sv2.jds.validation.validate_declaration`) and the pool's Mining Protocol server on every
Coinbase-only ``SetCustomMiningJob`` (:mod:`sv2.coinbase_only`), so both modes judge a coinbase
with the same code.

- :class:`PayoutRule`: what the first outputs must be for a revenue T, and the code a mismatch
  gets;
- :func:`distribution_rule`: the rule of a published 0x0003 distribution in its settlement mode
  (``invalid-payout-distribution`` in ``coinbase`` mode, ``invalid-settlement-outputs`` in the
  0x4003 modes);
- :func:`check_payout_outputs`: the expected outputs for T first, byte for byte and in PR #203
  §5's fixed order (pool payout, payouts in order with pruned ones omitted, additional
  outputs), then 0-valued outputs only (the JD client's and the template's, the witness
  commitment last); ``F >= T`` is ``unsatisfiable-distribution``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from payouts.errors import UnsatisfiableDistributionError, ValidationError
from payouts.settlement.modes import ExpectedOutputs
from payouts.tx.txout import TxOut
from sv2.distribution_book import Published
from sv2.job_errors import INVALID_PAYOUT_DISTRIBUTION, INVALID_SETTLEMENT_OUTPUTS, JobRejected


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


def distribution_rule(p: Published, expected: ExpectedOutputs) -> PayoutRule:
    """The rule of distribution ``p`` (PR #203 §6-§7) in its settlement mode (0x4003):
    ``expected(mode, distribution, T)`` is the settlement layer's output builder."""
    code = INVALID_PAYOUT_DISTRIBUTION if p.mode.name == "coinbase" else INVALID_SETTLEMENT_OUTPUTS

    def expected_for(t: int) -> Sequence[TxOut]:
        return expected(p.mode, p.distribution, t)

    return PayoutRule(code, expected_for, f"distribution {p.distribution_id} ({p.mode.name})")


def check_payout_outputs(
    outputs: Sequence[TxOut], revenue: int, rule: PayoutRule
) -> tuple[TxOut, ...]:
    """PR #203 §7 recompute-and-compare of ``outputs`` (every coinbase output, the witness
    commitment last) against ``rule`` at ``revenue`` T. Returns the expected payout outputs;
    raises :class:`~sv2.job_errors.JobRejected` with the rule's code (or the distribution's
    own ``unsatisfiable-distribution`` for F >= T) before anything changes."""
    if rule.fixed_revenue is not None and revenue != rule.fixed_revenue:
        raise JobRejected(
            rule.code,
            f"outputs were requested for {rule.fixed_revenue} sat; the coinbase pays {revenue}",
        )
    try:
        expected = tuple(rule.expected(revenue))
    except UnsatisfiableDistributionError as exc:
        # PR #203 (2026-09): F >= T; the client should have fallen back. Its own code, so a
        # client can tell "this template cannot pay that distribution" from "you cheated".
        raise JobRejected(exc.code, f"{rule.description}: {exc.message}") from None
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
    return expected


__all__ = ["PayoutRule", "check_payout_outputs", "distribution_rule"]
