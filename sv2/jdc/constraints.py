"""CoinbaseOutputConstraints a JD client announces to its Template Provider.

sv2-spec PR #203 (extension 0x0003, head ``04bac85b`` + the 2026-09-09 ``additional_outputs``
change) §4.4 of ``reference/sv2.md``: the JDC MUST NOT send CoinbaseOutputConstraints
(07-Template-Distribution-Protocol.md §7.1) before the first ``SetPayoutDistribution``, and
computes both fields from it:

- ``coinbase_output_max_additional_size`` = Σ serialized TxOut sizes (8-byte amount +
  CompactSize script length + script) of every output the distribution can put in the coinbase:
  the pool payout, every payee (none pruned: the revenue is not known yet) and the additional
  outputs -- no output-count prefix, as SRI's ``coinbase_output_constraints.rs`` does;
- ``coinbase_output_max_additional_sigops`` = their sigop cost (legacy sigops × 4: P2PKH costs 4,
  P2WPKH/P2TR 0), as SRI's ``total_sigop_cost()`` of a dummy coinbase.

With a settlement mode (extension 0x4003) the coinbase carries the mode's outputs instead
(``ctv``: one commitment output + additional outputs; ``musig2``: one P2TR output + additional),
and the constraints are that footprint alone (docs/extensions/0x4003-settlement-modes.md §4): a
client waits for the mode before it sends them. The numbers come from
:func:`sv2.domain_messages.output_constraints_for`, the one place both JD sides read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from payouts.distribution.model import Distribution
from payouts.tx.output_scripts import sigop_cost
from payouts.tx.txout import TxOut
from sv2.domain_messages import SETTLEMENT_OUTPUT_SIZE, output_constraints_for
from sv2.messages.template_distribution import CoinbaseOutputConstraints

U16_MAX = 0xFFFF
U32_MAX = 0xFFFFFFFF



@dataclass(frozen=True, slots=True)
class OutputConstraints:
    """The two fields of CoinbaseOutputConstraints, with where they came from."""

    max_additional_size: int
    max_additional_sigops: int
    distribution_id: int
    outputs: int  # how many outputs the size covers

    def message(self) -> CoinbaseOutputConstraints:
        """The TDP message (0x70) for a Template Provider."""
        return CoinbaseOutputConstraints(
            coinbase_output_max_additional_size=min(self.max_additional_size, U32_MAX),
            coinbase_output_max_additional_sigops=min(self.max_additional_sigops, U16_MAX),
        )

    def reserved_weight(self, segwit: bool = True) -> int:
        """Weight the TP reserves for them (sv2-spec §7.1, PR #163): 1168 + 4·size for a segwit
        block, 944 + 4·size for a legacy one."""
        return (1168 if segwit else 944) + 4 * self.max_additional_size

    def to_json(self) -> dict[str, Any]:
        return {
            "distribution_id": self.distribution_id,
            "coinbase_output_max_additional_size": self.max_additional_size,
            "coinbase_output_max_additional_sigops": self.max_additional_sigops,
            "outputs": self.outputs,
            "reserved_weight": self.reserved_weight(),
        }


def _footprint(scripts: Iterable[bytes]) -> tuple[int, int, int]:
    size = sigops = n = 0
    for s in scripts:
        size += TxOut(0, s).size
        sigops += sigop_cost(s)
        n += 1
    return size, sigops, n


def distribution_outputs_footprint(d: Distribution) -> tuple[int, int, int]:
    """(bytes, sigop cost, count) of every output ``d`` can add: pool payout, all payees,
    additional outputs (PR #203 output order; pruning only ever removes outputs)."""
    scripts = [d.pool_payout.script, *(p.script for p in d.payouts)]
    scripts += [a.script for a in d.additional_outputs]
    return _footprint(scripts)


def constraints_for(d: Distribution, mode: str | None = None) -> OutputConstraints:
    """CoinbaseOutputConstraints for ``d`` settled in the mode named ``mode`` (None or
    ``"coinbase"``: PR #203's, every output the distribution can add; ``"ctv"``/``"musig2"``:
    the one settlement output plus the additional outputs)."""
    name = mode or "coinbase"
    msg = output_constraints_for(d, name)
    n = (1 + len(d.payouts) if name == "coinbase" else 1) + len(d.additional_outputs)
    return OutputConstraints(msg.coinbase_output_max_additional_size,
                             msg.coinbase_output_max_additional_sigops, d.distribution_id, n)


__all__ = [
    "SETTLEMENT_OUTPUT_SIZE",
    "OutputConstraints",
    "constraints_for",
    "distribution_outputs_footprint",
]
